"""The package type-checks with mypy --strict (the configuration is pyproject.toml's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_the_package_type_checks_strictly() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"mypy --strict found errors:\n{done.stdout}{done.stderr}"
    assert "Success" in done.stdout
