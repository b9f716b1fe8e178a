"""Real Apache Airflow for the tests and benchmarks: one cached virtual environment per
pinned version, with this checkout of xcombus installed into it.

Airflow pins its own dependency tree, so it never shares the project's environment. The
first build of a version takes about 35 s and 290 MB (no constraints file is reachable
here, so the versions are pinned exactly); later sessions reuse it and only reinstall
xcombus (editable, a few seconds). ``XCOMBUS_CACHE`` moves the cache (default
``~/.cache/xcombus``).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from xcombus import Settings

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "examples" / "airflow"
CACHE = Path(os.environ.get("XCOMBUS_CACHE") or Path.home() / ".cache" / "xcombus") / "airflow"

#: version -> what pip installs into its environment (the official REST client with 3.x).
PINS: dict[str, list[str]] = {
    "3.3.2": ["apache-airflow==3.3.2", "apache-airflow-client==3.3.2"],
    "2.10.5": ["apache-airflow==2.10.5"],
}
BACKEND = "xcombus.airflow.XComBusBackend"
_SETTINGS = ("bootstrap_servers", "topic", "view_path", "partitions", "connect_timeout",
             "push_timeout", "pull_timeout", "xcom_backend", "allowed_deserialization_classes",
             "object_storage_path", "object_storage_threshold", "object_storage_compression",
             "preview_bytes", "max_value_bytes")


def _pip(python: Path, *args: str, timeout: float = 1800) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{done.stdout[-3000:]}\n"
                           f"{done.stderr[-3000:]}")


def ensure_venv(version: str) -> Path:
    """The cached virtual environment of ``version`` with this xcombus installed; built once."""
    pins = PINS[version]
    venv = CACHE / f"{version}-py{sys.version_info.major}{sys.version_info.minor}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    ready = venv / ".xcombus-airflow"
    wanted = " ".join(pins)
    project = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + str(REPO).encode()).hexdigest()
    installed = venv / ".xcombus-project"
    with open(venv.parent / f".{version}.lock", "w") as lock:  # concurrent sessions take turns
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (python.exists() and ready.exists() and ready.read_text() == wanted):
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                           stdin=subprocess.DEVNULL)
            _pip(python, *pins)
            ready.write_text(wanted)
            print(f"airflow_env: built {venv} in {time.monotonic() - started:.0f}s", file=sys.stderr)
        if not installed.exists() or installed.read_text() != project:
            # The documented install: the airflow extra (satisfied by the pinned Airflow).
            _pip(python, "-e", f"{REPO}[airflow,objstore]")
            installed.write_text(project)
    return venv


@dataclass
class AirflowEnv:
    """One Airflow version with its own AIRFLOW_HOME (a migrated SQLite metadata DB)."""

    version: str
    venv: Path
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def db(self) -> Path:
        return self.home / "airflow.db"

    def env(self, settings: Settings | None = None, **extra: str) -> dict[str, str]:
        """A clean environment for an Airflow process: none of the caller's own AIRFLOW_* or
        XCOMBUS_* settings leak in; the backend is xcombus's unless ``extra`` says otherwise."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AIRFLOW", "XCOMBUS_", "PYTHON", "VIRTUAL_ENV"))}
        env.update({
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__XCOM_BACKEND": BACKEND,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        })
        if settings is not None:
            for name in _SETTINGS:
                env[f"XCOMBUS_{name.upper()}"] = str(getattr(settings, name))
        env.update(self.extra_env)
        env.update(extra)
        return env

    def run(self, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS`` in this environment; output captured."""
        return subprocess.run([str(self.venv / "bin" / "airflow"), *args], env=env, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def python_run(self, code: str, *, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run Python code with this environment's interpreter."""
        return subprocess.run([str(self.python), "-c", code], env=env, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def airflow_env(version: str, home: Path) -> AirflowEnv:
    """Build (or reuse) the environment of ``version`` and migrate a metadata DB in ``home``."""
    af = AirflowEnv(version, ensure_venv(version), home)
    home.mkdir(parents=True, exist_ok=True)
    done = af.run("db", "migrate", env=af.env(), timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"airflow {version} db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return af
