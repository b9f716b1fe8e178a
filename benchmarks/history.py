"""The suite's memory across runs: one JSON line per run beside the results file.

A run appends its entry (date, code, sizes, machine gauge, median of every target); the
report sets side by side only the runs measured with the same sizes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.figures import TARGETS, median


def history_path(results: Path) -> Path:
    """Where the runs that wrote ``results`` are remembered: beside it, one JSON line each."""
    return results.with_name("history.jsonl")


#: What defines the figures of a run (not how often they were measured): only runs that
#: agree on these are set side by side.
SIZES = ("backlog", "pushes", "visible_rate", "visible_seconds")
#: The sizes of ``python benchmarks/run.py`` without options (runs recorded before the
#: history kept its sizes were such runs).
DEFAULT_SIZES = {"backlog": 1_000_000, "pushes": 100_000, "visible_rate": 5_000, "visible_seconds": 10.0}


def history_entry(meta: dict[str, Any], values: dict[str, list[float]]) -> dict[str, Any]:
    """What a run leaves in the history: when, which code, its sizes, how fast the machine
    was, and the median of every target figure."""
    return {"date": meta["date"], "code": meta.get("code", "unknown"),
            "sizes": {name: meta.get(name) for name in SIZES},
            "gauge_ms": median(values["machine_gauge"]) if values.get("machine_gauge") else None,
            "medians": {fid: median(values[fid]) for fid, *_ in TARGETS if values.get(fid)}}


def read_history(path: Path) -> list[dict[str, Any]]:
    """The runs remembered in ``path`` (none if it does not exist); a line that does not
    parse (a run killed while writing it) is skipped with a warning, not fatal."""
    if not path.exists():
        return []
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
            if not isinstance(run, dict) or not isinstance(run.get("medians"), dict):
                raise ValueError("not a run")
        except ValueError as exc:
            print(f"report: skipping line {number} of {path}: {exc}")
            continue
        runs.append(run)
    return runs


def comparable(history: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs measured with this run's sizes (a run without recorded sizes used the defaults)."""
    sizes = {name: meta.get(name) for name in SIZES}
    return [r for r in history if r.get("sizes", DEFAULT_SIZES) == sizes]
