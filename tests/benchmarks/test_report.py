"""The benchmark report's history: what a run remembers and how runs are set side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import history, report

pytestmark = pytest.mark.unit
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return json.loads((BENCHMARKS / "results" / "latest.json").read_text())


def _run(code: str, push: float, drain: float, **sizes: Any) -> dict[str, Any]:
    meta = {"date": f"2026-11-25 0{len(code)}:00 UTC", "code": code, **history.DEFAULT_SIZES, **sizes}
    values = {"machine_gauge": [90.0, 95.0, 100.0], "push_tput_1000": [push, push * 2, push / 2],
              "drain_rate": [drain]}
    return history.history_entry(meta, values)


def test_history_entry_keeps_the_median_of_each_target_and_the_gauge() -> None:
    entry = _run("abc1234", 90_000, 120_000)
    assert entry["code"] == "abc1234"
    assert entry["sizes"] == history.DEFAULT_SIZES
    assert entry["gauge_ms"] == 95.0
    assert entry["medians"] == {"push_tput_1000": 90_000, "drain_rate": 120_000}


def test_runs_are_set_side_by_side_with_misses_in_bold(results: dict[str, Any]) -> None:
    past = [_run("aaaaaaa", 90_000, 120_000), _run("bbbbbbb", 110_000, 95_000)]
    text = report.markdown(results, [], "img", past)
    section = text.split("## Across runs", 1)[1].split("## Other figures", 1)[0]
    push = next(line for line in section.splitlines() if "asyncio's standard event loop" in line)
    assert "**90,000**" in push and "| 110,000 |" in push and push.endswith("| 1 of 2 |")
    drain = next(line for line in section.splitlines() if "draining" in line)
    assert "| 120,000 |" in drain and "**95,000**" in drain and drain.endswith("| 1 of 2 |")
    assert "`aaaaaaa`" in section and "`bbbbbbb`" in section


def test_a_single_run_has_no_history_section(results: dict[str, Any]) -> None:
    assert "## Across runs" not in report.markdown(results, [], "img", [_run("a", 1.0, 1.0)])


def test_the_history_lives_beside_the_results_file(tmp_path: Path) -> None:
    assert history.history_path(tmp_path / "latest.json") == tmp_path / "history.jsonl"


def test_only_runs_of_the_same_sizes_are_set_side_by_side(results: dict[str, Any]) -> None:
    past = [_run("aaaaaaa", 90_000, 120_000), _run("quickqq", 1.0, 1.0, backlog=100_000),
               _run("bbbbbbb", 110_000, 95_000)]
    legacy = _run("ccccccc", 100_000, 100_000)
    del legacy["sizes"]  # recorded before the history kept sizes: a default run
    assert [r["code"] for r in history.comparable([*past, legacy], results["meta"])] == [
        "aaaaaaa", "bbbbbbb", "ccccccc"]
    text = report.markdown(results, [], "img", past, "benchmarks/results/history.jsonl")
    assert "`quickqq`" not in text and "`benchmarks/results/history.jsonl`" in text


def test_a_damaged_history_line_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "history.jsonl"
    good = json.dumps(_run("aaaaaaa", 90_000, 120_000))
    path.write_text(f"{good}\n{good[:40]}\n[1, 2]\n\n{good}\n")
    assert [r["code"] for r in history.read_history(path)] == ["aaaaaaa", "aaaaaaa"]
    assert "skipping line 2" in capsys.readouterr().out
    assert history.read_history(tmp_path / "missing.jsonl") == []
