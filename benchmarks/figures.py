"""The figures of the suite, in one registry: every figure id is spelled here and only here.

A bench function returns ``(values, samples)``: figure id -> value and series id -> raw
samples. The ids are the first column of TARGETS, OTHERS, BASELINE and RAW (values) and
SERIES (samples); :func:`check` refuses any other, so a renamed figure cannot silently
drop out of the report. Ids that depend on a parameter are built by a function here
(:func:`push_tput`). The report, the plots and the run's summary read labels, units and
targets from here too.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

#: id, the issue's row, unit, ">=" or "<=", target.
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("uvloop_push_tput_1000", "push throughput, one process, 1,000 concurrent task instances, "
     "small values, acks=all, on uvloop (`pip install 'xcombus[uvloop]'`)", "pushes/s", ">=", 100_000),
    ("push_tput_1000", "push throughput, the same figure on asyncio's standard event loop",
     "pushes/s", ">=", 100_000),
    ("push_lat_p50", "single push latency p50, acks=all", "ms", "<=", 2),
    ("push_lat_p99", "single push latency p99, acks=all", "ms", "<=", 10),
    ("drain_rate", "materializer draining a {backlog}-event backlog into SQLite (own process, "
     "from spawn)", "events/s", ">=", 100_000),
    ("pull_ev_p50", "pull one key, eventual, p50", "µs", "<=", 200),
    ("pull_ryw_p50", "pull one key, read-your-writes, p50", "ms", "<=", 3),
    ("fanin_ryw_p50", "fan-in pull over 1,000 mapped task instances (read-your-writes, the "
     "default), p50", "ms", "<=", 20),
    ("visible_p99", "push → visible in the view at {rate} pushes/s sustained, p99", "ms", "<=", 50),
    ("rebuild_s", "rebuild {backlog} events into a fresh view", "s", "<=", 10),
    ("rss_peak", "materializer peak RSS through a {backlog}-event backlog", "MiB", "<=", 150),
    ("history_p50", "history of one XCom (10 versions, 2 clears and a fenced push among them) on a "
     "{backlog}-event topic, from the view's version index (`audit.history`, Python API), p50",
     "ms", "<=", 20),
    ("index_bytes_per_event_versions", "version index in the view file per event, every XCom pushed "
     "4 times ({versions}-event backlog, drained)", "bytes", "<=", 64),
)

#: Figures reported besides the targets: id, label, unit.
OTHERS: tuple[tuple[str, str, str], ...] = (
    ("machine_gauge", "machine gauge: a fixed pure-Python workload (200,000 msgspec encode/decode "
     "+ dict updates) timed before each repeat; lower is faster, compare runs by it", "ms"),
    ("record_push_tput_1000", "push throughput, 1,000 concurrent task instances, each value a "
     "record with nested lists and a dict (340 bytes of JSON, `bench_pipeline.RECORD`)", "pushes/s"),
    ("push_tput_200", "push throughput, 200 concurrent task instances", "pushes/s"),
    ("push_tput_5000", "push throughput, 5,000 concurrent task instances", "pushes/s"),
    ("produce_rate", "push throughput while writing the backlog ({backlog} distinct XComs, "
     "1,000 coroutines)", "pushes/s"),
    ("pull_ev_p99", "pull one key, eventual, p99", "µs"),
    ("pull_ryw_p99", "pull one key, read-your-writes, p99", "ms"),
    ("fanin_ev_p50", "fan-in pull over 1,000 mapped task instances, eventual, p50", "ms"),
    ("visible_p50", "push → visible at {rate} pushes/s, p50", "ms"),
    ("visible_max", "push → visible at {rate} pushes/s, max", "ms"),
    ("visible_ack_p50", "push acknowledged (xcom_push returned) at {rate} pushes/s, p50", "ms"),
    ("visible_ack_p99", "push acknowledged (xcom_push returned) at {rate} pushes/s, p99", "ms"),
    ("visible_rate", "rate the paced pusher achieved", "pushes/s"),
    ("drain_rate_steady", "materializer drain rate after its first commit (start-up excluded)",
     "events/s"),
    ("drain_first_s", "materializer spawn → first batch committed", "s"),
    ("rss_peak_materializer", "peak RSS of the materializer process alone (VmHWM)", "MiB"),
    ("rss_peak_writer", "peak RSS of its view-writer child alone (VmHWM)", "MiB"),
    ("drain_cpu_us_materializer", "CPU per event, materializer process (fetch, fold, hand-over)",
     "µs"),
    ("drain_cpu_us_writer", "CPU per event, view-writer child (SQLite transactions)", "µs"),
    ("rebuild_rate", "rebuild rate", "events/s"),
    ("big_pull_ev_p50", "pull one random key of the {backlog}-row view, eventual, p50 "
     "(reader process without materializer)", "µs"),
    ("big_pull_ryw_p50", "pull one random key of the {backlog}-row view, read-your-writes, p50",
     "ms"),
    ("history_p99", "history of one XCom from the index, {backlog}-event topic, p99", "ms"),
    ("history_small_p50", "history of the same XCom from the index, {small}-event topic, p50", "ms"),
    ("history_small_p99", "history of the same XCom from the index, {small}-event topic, p99", "ms"),
    ("history_size_ratio", "history from the index, p50 on the {backlog}-event topic / p50 on the "
     "{small}-event topic (1: independent of the topic's size)", "x"),
    ("history_scan_s", "history of the same XCom without a view (scan of its partition from offset 0), "
     "{backlog}-event topic, median of 3 calls", "s"),
    ("history_scan_small_s", "history without a view (scan), {small}-event topic, median of 3 calls",
     "s"),
    ("view_bytes_per_event", "view file per event, the {backlog}-event backlog (drained; its pages "
     "by dbstat)", "bytes"),
    ("index_bytes_per_event", "version index per event in that view (every XCom pushed once: a "
     "current row is its own entry, so the index holds only the tracked XCom)", "bytes"),
    ("index_bytes_per_row_versions", "version index per index row, every XCom pushed 4 times",
     "bytes"),
    ("view_bytes_per_event_versions", "view file per event, every XCom pushed 4 times", "bytes"),
    ("drain_rate_versions", "materializer drain rate, {versions}-event backlog with every XCom "
     "pushed 4 times (3 of 4 pushes indexed)", "events/s"),
)

BASELINE: tuple[tuple[str, str, str], ...] = (
    ("base_push_tput", "push throughput (sequential, one committed transaction per push)", "pushes/s"),
    ("base_push_p50", "push latency p50", "ms"),
    ("base_push_p99", "push latency p99", "ms"),
    ("base_pull_p50", "pull one key p50", "ms"),
    ("base_pull_p99", "pull one key p99", "ms"),
    ("base_fanin_p50", "fan-in over 1,000 map indexes p50", "ms"),
)

#: xcombus figure, its unit factor to ms (or 1), baseline figure, label, higher is better.
RATIOS: tuple[tuple[str, float, str, str, bool], ...] = (
    ("push_tput_1000", 1, "base_push_tput", "push throughput (1,000 concurrent task instances vs "
     "sequential commits)", True),
    ("push_lat_p50", 1, "base_push_p50", "single push latency p50", False),
    ("pull_ryw_p50", 1, "base_pull_p50", "pull one key p50, read-your-writes vs query", False),
    ("pull_ev_p50", 1e-3, "base_pull_p50", "pull one key p50, eventual vs query", False),
    ("fanin_ryw_p50", 1, "base_fanin_p50", "fan-in over 1,000 p50, read-your-writes vs IN query", False),
    ("fanin_ev_p50", 1, "base_fanin_p50", "fan-in over 1,000 p50, eventual vs IN query", False),
)


#: label, xcombus figure, factor to the unit, Airflow 2.10.5's figure quoted in the issue, unit.
AIRFLOW: tuple[tuple[str, str, float, float, str], ...] = (
    ("push throughput, committed", "push_tput_1000", 1, 96, "pushes/s"),
    ("pull one key p50 (xcombus read-your-writes; Airflow get_one)", "pull_ryw_p50", 1, 4.5, "ms"),
    ("fan-in p50 (xcombus over 1,000 map indexes; Airflow over 100 tasks)", "fanin_ryw_p50", 1, 22.5, "ms"),
)

#: Values kept in the results file but not shown in the report: id, what it is, unit.
RAW: tuple[tuple[str, str, str], ...] = (
    ("drain_s", "materializer spawn → backlog applied, wall time", "s"),
    ("rss_sampled_peak", "peak of the RSS sampled every 20 ms (materializer + writer child)", "MiB"),
    ("visible_commits", "changes of the view's offsets table seen by the push → visible poller", ""),
)

#: Raw sample series (seconds, unless named otherwise) a figure leaves for the plots.
SERIES: tuple[str, ...] = (
    "push_lat", "pull_ev", "pull_ryw", "fanin_ryw", "fanin_ev", "visible", "visible_ack",
    "big_pull_ev", "big_pull_ryw", "rss_t", "rss_mib", "rss_applied", "history_big", "history_small",
    "base_push", "base_pull", "base_fanin",
)

VALUE_IDS: frozenset[str] = frozenset(
    fid for table in (TARGETS, OTHERS, BASELINE, RAW) for fid, *_ in table)
SERIES_IDS: frozenset[str] = frozenset(SERIES)
#: Concurrencies the push-throughput ids exist for.
PUSH_CONCURRENCY: tuple[int, ...] = (1_000, 200, 5_000)


def push_tput(concurrency: int, *, record: bool = False, uvloop: bool = False) -> str:
    """The id of a push-throughput figure (raises KeyError for one the registry lacks)."""
    prefix = "record_" if record else "uvloop_" if uvloop else ""
    return _known(f"{prefix}push_tput_{concurrency}", VALUE_IDS)


def check(values: Iterable[str] = (), series: Iterable[str] = ()) -> None:
    """Raise KeyError naming any value or series id that is not registered here."""
    for fid in values:
        _known(fid, VALUE_IDS)
    for sid in series:
        _known(sid, SERIES_IDS)


def _known(fid: str, ids: frozenset[str]) -> str:
    if fid not in ids:
        raise KeyError(f"figure id {fid!r} is not registered in benchmarks/figures.py; add it to "
                       "TARGETS, OTHERS, BASELINE, RAW or SERIES")
    return fid


def fill_label(text: str, meta: dict[str, Any]) -> str:
    """A label with the run's sizes filled in (``{backlog}``, ``{rate}``, ``{small}``: the
    history figures' small topic, ``{versions}``: the index-size backlog)."""
    tenth = meta["backlog"] // 10
    return text.format(backlog=f"{meta['backlog']:,}", rate=f"{meta['visible_rate']:,}",
                       small=f"{meta.get('history_small', tenth):,}",
                       versions=f"{meta.get('index_backlog', tenth):,}")


def median(values: list[float]) -> float:
    return statistics.median(values)


def met(op: str, value: float, target: float) -> bool:
    return value >= target if op == ">=" else value <= target


def headroom(op: str, value: float, target: float) -> float:
    """> 1 when the target is met, by that factor; < 1 when missed."""
    return value / target if op == ">=" else target / value


# Every id the other tables refer to is a registered one.
check([x for x, *_ in TARGETS], [])
check([fid for x, _, b, *_ in RATIOS for fid in (x, b)] + [x for _, x, *_ in AIRFLOW])
assert {push_tput(c) for c in PUSH_CONCURRENCY}
