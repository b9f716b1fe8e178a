"""Render a results file (written by ``benchmarks/run.py``) into docs/benchmarks.md and plots.

    python benchmarks/report.py [--results benchmarks/results/latest.json] [--out docs/benchmarks.md]
                                [--img docs/img] [--no-plots]

``run.py`` calls this at the end of a run; calling it alone re-renders without measuring
(``--no-plots``: the text only, no matplotlib needed). When ``benchmarks/bench_airflow.py``
left ``airflow.json`` beside the results file, the report gains its "Inside Apache Airflow
3.3" section.
The analysis of targets that were not met is hand-written (it comes from profiles, not from
this run's numbers) and kept in ``benchmarks/analysis.md``, which is included verbatim.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import REPO, fmt

DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "latest.json"
ANALYSIS = REPO / "benchmarks" / "analysis.md"

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


def history_path(results: Path) -> Path:
    """Where the runs that wrote ``results`` are remembered: beside it, one JSON line each."""
    return results.with_name("history.jsonl")


#: What defines the figures of a run (not how often they were measured): only runs that
#: agree on these are set side by side.
_SIZES = ("backlog", "pushes", "visible_rate", "visible_seconds")
#: The sizes of ``python benchmarks/run.py`` without options (runs recorded before the
#: history kept its sizes were such runs).
DEFAULT_SIZES = {"backlog": 1_000_000, "pushes": 100_000, "visible_rate": 5_000, "visible_seconds": 10.0}


def history_entry(meta: dict[str, Any], values: dict[str, list[float]]) -> dict[str, Any]:
    """What a run leaves in the history: when, which code, its sizes, how fast the machine
    was, and the median of every target figure."""
    return {"date": meta["date"], "code": meta.get("code", "unknown"),
            "sizes": {name: meta.get(name) for name in _SIZES},
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
    sizes = {name: meta.get(name) for name in _SIZES}
    return [r for r in history if r.get("sizes", DEFAULT_SIZES) == sizes]



def _across_runs(history: Sequence[dict[str, Any]], meta: dict[str, Any], where: str,
                 last: int = 6) -> list[str]:
    runs = list(history)[-last:]
    header = ["target", *[f"{r['date'][:16]}<br>`{r['code']}`" for r in runs], "met in"]
    rows = [["machine gauge (ms, lower is faster)",
             *[fmt(r["gauge_ms"]) if r.get("gauge_ms") else "" for r in runs], ""]]
    for fid, label, unit, op, target in TARGETS:
        cells, hits, seen = [], 0, 0
        for r in runs:
            value = r["medians"].get(fid)
            if value is None:
                cells.append("")
                continue
            seen += 1
            ok = met(op, value, target)
            hits += ok
            cells.append(fmt(value) if ok else f"**{fmt(value)}**")
        rows.append([f"{_fill(label, meta)} ({op} {fmt(target)} {unit})", *cells, f"{hits} of {seen}"])
    return [
        "## Across runs",
        "",
        f"The last {len(runs)} runs of the suite on this machine with this run's sizes "
        f"(`{where}`, one line per run), each cell the run's median; **bold** is a miss. "
        "The same code "
        "measured in different phases of the VM differs by more than most changes do, so read "
        "a figure against the machine gauge of its run, and a change against several runs.",
        "",
        *_table(header, ["---", *["---:"] * len(runs), "---:"], rows),
        "",
    ]


def median(values: list[float]) -> float:
    return statistics.median(values)


def met(op: str, value: float, target: float) -> bool:
    return value >= target if op == ">=" else value <= target


def headroom(op: str, value: float, target: float) -> float:
    """> 1 when the target is met, by that factor; < 1 when missed."""
    return value / target if op == ">=" else target / value


def _fill(text: str, meta: dict[str, Any]) -> str:
    return text.format(backlog=f"{meta['backlog']:,}", rate=f"{meta['visible_rate']:,}")


#: The plots ``plots()`` writes, in order, with their captions.
PLOTS: dict[str, str] = {
    "targets.png": "Every target, as headroom: bars right of 1 are met, left of 1 missed.",
    "latency.png": "Latency distributions of pushes, pulls and fan-in, xcombus (solid) against the "
                   "SQL baseline (dashed).",
    "baseline.png": "xcombus against the Airflow-style SQLAlchemy/SQLite baseline (medians; log "
                    "scale where the bars differ by more than 20x).",
    "materializer_rss.png": "Materializer RSS, with its view-writer child (sampled every 20 ms), "
                            "and progress through the backlog.",
    "push_throughput.png": "Push throughput against concurrency (median, min..max), with the "
                           "target and the baseline.",
}


# -- plots ----------------------------------------------------------------------------------
def plots(res: dict[str, Any], img: Path) -> list[tuple[str, str]]:
    """Write the PNGs; return (file name, caption) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    vals, samples, meta = res["values"], res["samples"], res["meta"]
    out: list[tuple[str, str]] = []
    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3})

    # 1. Targets: measured against target, as a headroom factor (log scale).
    rows = [t for t in TARGETS if t[0] in vals]
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(rows) + 1.8))
    names, mids, los, his, colors = [], [], [], [], []
    for fid, label, unit, op, target in rows:
        v = vals[fid]
        h = [headroom(op, x, target) for x in v]
        mids.append(headroom(op, median(v), target))
        los.append(min(h))
        his.append(max(h))
        names.append(f"{_fill(label, meta)}\n{op} {fmt(target)} {unit}: measured {fmt(median(v))} {unit}")
        colors.append("#2e7d32" if met(op, median(v), target) else "#c62828")
    y = list(range(len(rows)))[::-1]
    ax.barh(y, mids, color=colors, alpha=0.85)
    ax.errorbar(mids, y, xerr=[[m - lo for m, lo in zip(mids, los, strict=True)],
                               [hi - m for m, hi in zip(mids, his, strict=True)]],
                fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axvline(1, color="black", lw=1.2)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("headroom: measured/target for throughput, target/measured for time and memory\n"
                  "right of 1 (green) = met; whiskers = min..max over repeats")
    ax.set_title("xcombus against the targets (medians)")
    fig.tight_layout()
    fig.savefig(img / "targets.png", dpi=110)
    plt.close(fig)
    out.append(("targets.png", PLOTS["targets.png"]))

    # 2. Latency distributions (CDFs) from the last repeat.
    def cdf(ax: Any, key: str, label: str, scale: float = 1e3, **kw: Any) -> None:
        q = samples.get(key)
        if q:
            n = len(q)
            ax.plot([x * scale for x in q], [i / (n - 1) * 100 for i in range(n)], label=label, **kw)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    cdf(ax, "push_lat", "xcombus push, sequential (idle)")
    cdf(ax, "visible_ack", f"xcombus push acknowledged, at {meta['visible_rate']:,}/s")
    cdf(ax, "visible", f"xcombus push → visible in view, at {meta['visible_rate']:,}/s")
    cdf(ax, "base_push", "baseline push (SQL commit)", ls="--", color="black")
    ax.axvline(50, color="#c62828", lw=0.8, ls=":")
    ax.text(50, 92, " 50 ms", color="#c62828", fontsize=8)
    ax.set_title("push latency")
    ax2 = axes[1]
    cdf(ax2, "pull_ev", "xcombus pull, eventual")
    cdf(ax2, "pull_ryw", "xcombus pull, read-your-writes")
    cdf(ax2, "big_pull_ev", f"xcombus pull, eventual, {meta['backlog']:,}-row view")
    cdf(ax2, "big_pull_ryw", f"xcombus pull, read-your-writes, {meta['backlog']:,}-row view")
    cdf(ax2, "base_pull", "baseline pull (SQL query)", ls="--", color="black")
    ax2.set_title("pull one key")
    ax3 = axes[2]
    cdf(ax3, "fanin_ev", "xcombus fan-in, eventual")
    cdf(ax3, "fanin_ryw", "xcombus fan-in, read-your-writes")
    cdf(ax3, "base_fanin", "baseline fan-in (SQL IN query)", ls="--", color="black")
    ax3.set_title("fan-in pull over 1,000 map indexes")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for a in axes:
        a.set_xscale("log")
        lo, hi = a.get_xlim()
        a.xaxis.set_major_locator(LogLocator(subs=(1,) if hi / lo > 1000 else (1, 2, 5)))
        a.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("latency (ms, log scale)")
        a.set_ylabel("percentile")
        a.set_ylim(0, 100)
        a.legend(fontsize=7.5, loc="lower right")
    fig.suptitle("Latency distributions (last repeat; each curve is a CDF: further left is faster)")
    fig.tight_layout()
    fig.savefig(img / "latency.png", dpi=110)
    plt.close(fig)
    out.append(("latency.png", PLOTS["latency.png"]))

    # 3. xcombus against the baseline.
    pairs = [("push throughput\n(pushes/s, higher is better)", "push_tput_1000", "base_push_tput", 1),
             ("pull one key p50\n(ms, lower is better)", "pull_ryw_p50", "base_pull_p50", 1),
             ("fan-in over 1,000 p50\n(ms, lower is better)", "fanin_ryw_p50", "base_fanin_p50", 1)]
    pairs = [p for p in pairs if p[1] in vals and p[2] in vals]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4.2))
        for ax, (title, x, b, _) in zip(list(axes) if len(pairs) > 1 else [axes], pairs, strict=True):
            xv, bv = median(vals[x]), median(vals[b])
            bars = ax.bar(["xcombus", "SQL baseline"], [xv, bv], color=["#1565c0", "#757575"])
            ax.bar_label(bars, labels=[fmt(xv), fmt(bv)])
            ax.margins(y=0.15)
            ratio = xv / bv
            ax.set_title(f"{title}\nxcombus/baseline = {ratio:.3g}", fontsize=10)
            if max(xv, bv) / max(min(xv, bv), 1e-12) > 20:
                ax.set_yscale("log")
        fig.suptitle("xcombus (read-your-writes) against an Airflow-style SQL XCom table on SQLite, same run")
        fig.tight_layout()
        fig.savefig(img / "baseline.png", dpi=110)
        plt.close(fig)
        out.append(("baseline.png", PLOTS["baseline.png"]))

    # 4. Materializer RSS through the backlog.
    if samples.get("rss_t"):
        fig, ax = plt.subplots(figsize=(9, 4.2))
        ax.plot(samples["rss_t"], samples["rss_mib"], color="#6a1b9a",
                label="RSS, materializer + writer child (MiB)")
        ax.axhline(150, color="#c62828", ls=":", lw=1)
        ax.text(0, 152, "150 MiB target", color="#c62828", fontsize=8)
        ax.set_xlabel("seconds since the materializer process was spawned")
        ax.set_ylabel("resident set size (MiB)")
        ax.set_ylim(0, max(170, max(samples["rss_mib"]) * 1.1))
        ax2 = ax.twinx()
        ax2.plot(samples["rss_t"], [a / 1e3 for a in samples["rss_applied"]], color="#2e7d32",
                 label="events applied (thousands)")
        ax2.set_ylabel("events applied to the view (thousands)")
        ax2.grid(False)
        lines = ax.get_lines()[:1] + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
        ax.set_title(f"python -m consumers.materializer draining a {meta['backlog']:,}-event "
                     "backlog (last repeat)")
        fig.tight_layout()
        fig.savefig(img / "materializer_rss.png", dpi=110)
        plt.close(fig)
        out.append(("materializer_rss.png", PLOTS["materializer_rss.png"]))

    # 5. Push throughput against concurrency.
    conc = sorted(int(k.rsplit("_", 1)[1]) for k in vals if k.startswith("push_tput_"))
    if conc:
        fig, ax = plt.subplots(figsize=(7, 4))
        meds = [median(vals[f"push_tput_{c}"]) for c in conc]
        lows = [m - min(vals[f"push_tput_{c}"]) for c, m in zip(conc, meds, strict=True)]
        highs = [max(vals[f"push_tput_{c}"]) - m for c, m in zip(conc, meds, strict=True)]
        ax.errorbar(conc, meds, yerr=[lows, highs],
                    marker="o", capsize=4, label="xcombus")
        ax.axhline(100_000, color="#c62828", ls=":", lw=1, label="target 100,000/s")
        if "base_push_tput" in vals:
            ax.axhline(median(vals["base_push_tput"]), color="black", ls="--", lw=1,
                       label="SQL baseline (sequential)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(conc)
        ax.set_xticklabels([f"{c:,}" for c in conc])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("concurrent task instances (one coroutine each, awaiting each push)")
        ax.set_ylabel("acknowledged pushes/s")
        ax.set_title("Push throughput, one process, acks=all")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "push_throughput.png", dpi=110)
        plt.close(fig)
        out.append(("push_throughput.png", PLOTS["push_throughput.png"]))
    return out


# -- inside Apache Airflow (benchmarks/bench_airflow.py) ------------------------------------
def airflow_results_path(results: Path) -> Path:
    """Where ``bench_airflow.py`` leaves its results for the suite's results at ``results``."""
    return results.with_name("airflow.json")


def read_airflow(results: Path) -> dict[str, Any] | None:
    """The Airflow comparison beside ``results``, if one was run (else None)."""
    path = airflow_results_path(results)
    if not path.exists():
        return None
    try:
        res = json.loads(path.read_text())
        if not isinstance(res, dict) or not isinstance(res.get("medians"), dict):
            raise ValueError("not a bench_airflow.py result")
    except ValueError as exc:
        print(f"report: ignoring {path}: {exc}")
        return None
    return res


#: configuration -> short column header.
AIRFLOW_COLUMNS = {"default": "Airflow default", "objstore": "common-io object storage",
                   "xcombus_view": "xcombus, view", "xcombus_topic": "xcombus, no view"}
_SIZE_NAMES = {1024: "1 KB", 1_048_576: "1 MB", 10_485_760: "10 MB"}


def _airflow_rows(meta: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure id, label, unit) of the medians table, in order."""
    n, fanout = meta["small"], meta["fanout"]
    rows = [
        ("push_1k_p50", f"push a 1 KB value, p50 of {n} `ti.xcom_push` in a row", "ms"),
        ("push_1k_p90", "push a 1 KB value, p90", "ms"),
        ("push_1k_first", "the first push of the process (opens the backend's connections)", "ms"),
        ("pull_1k_p50", f"pull a 1 KB value, p50 of {n} `ti.xcom_pull` in a downstream task", "ms"),
        ("pull_1k_p90", "pull a 1 KB value, p90", "ms"),
        ("pull_1k_first", "the first pull of the task", "ms"),
        ("ab_push_default", "paired in one task: push through Airflow's default class, p50", "ms"),
        ("ab_push_objstore", "paired: push through common-io object storage's class, p50", "ms"),
        ("ab_push_backend", "paired: push through the configured backend, p50", "ms"),
        ("ab_push_backend_diff", "paired: configured minus default, median of the pairs", "ms"),
        ("ab_serialize_backend", "paired: the configured backend's `serialize_value` alone, p50", "ms"),
        ("ab_pull_default", "paired in one task: pull through Airflow's default class, p50", "ms"),
        ("ab_pull_objstore", "paired: pull through common-io object storage's class, p50", "ms"),
        ("ab_pull_backend", "paired: pull through the configured backend, p50", "ms"),
        ("ab_pull_backend_diff", "paired: configured minus default, median of the pairs", "ms"),
        ("ab_deserialize_backend", "paired: the configured backend's `deserialize_value` alone, p50",
         "ms"),
    ]
    for op in ("push", "pull"):
        for size, name in list(_SIZE_NAMES.items())[1:]:
            rows += [
                (f"ab_{op}_{size}_objstore", f"paired: {op} one {name} value through common-io object "
                 "storage's class", "ms"),
                (f"ab_{op}_{size}_backend", f"paired: {op} one {name} value through the configured "
                 "backend", "ms"),
                (f"ab_{op}_{size}_ratio", "paired: configured / object storage, median of the pairs", "x"),
            ]
    for size, name in _SIZE_NAMES.items():
        rows.append((f"push_{size}", f"push one {name} value (median of the task's pushes)", "ms"))
    for size, name in _SIZE_NAMES.items():
        rows.append((f"pull_{size}", f"pull one {name} value", "ms"))
    rows += [
        ("fanin_len", f"reducer: `len()` of the lazy sequence over {fanout:,} mapped instances", "ms"),
        ("fanin_iterate", f"reducer: iterate all {fanout:,} items (`for v in values`)", "ms"),
        ("fanin_item_p50", "reducer: one item of that iteration, p50", "ms"),
        ("fanin_slice", "reducer: the same items as one slice, `values[:]`", "ms"),
        ("dag_small_wall_s", "whole DAG `xcom_bench_small`: `airflow dags test` wall time", "s"),
        ("dag_small_run_s", "whole DAG `xcom_bench_small`: Airflow's run_duration", "s"),
        ("dag_ab_run_s", "whole DAG `xcom_bench_ab`: run_duration", "s"),
        ("dag_sizes_wall_s", "whole DAG `xcom_bench_sizes`: wall time", "s"),
        ("dag_sizes_run_s", "whole DAG `xcom_bench_sizes`: run_duration", "s"),
        ("dag_fanin_wall_s", f"whole DAG `xcom_bench_fanin` ({fanout:,} mapped instances): wall time",
         "s"),
        ("dag_fanin_run_s", "whole DAG `xcom_bench_fanin`: run_duration", "s"),
    ]
    return rows


def airflow_markdown(res: dict[str, Any]) -> list[str]:
    """The "Inside Apache Airflow 3.3" section from ``bench_airflow.py``'s results."""
    meta, med, values = res["meta"], res["medians"], res["values"]
    configs = [c for c in AIRFLOW_COLUMNS if c in med]

    def cell(config: str, fid: str) -> str:
        v = med.get(config, {}).get(fid)
        if v is None:
            return ""
        runs = values.get(config, {}).get(fid, [])
        spread = f" ({fmt(min(runs))}..{fmt(max(runs))})" if len(runs) > 1 else ""
        return f"{fmt(v)}{spread}"

    def get(config: str, fid: str) -> float | None:
        return med.get(config, {}).get(fid)

    gauge = meta.get("gauge_ms") or []
    lines = [
        "## Inside Apache Airflow 3.3",
        "",
        f"Measured on {meta['date']} by `{meta['command']}` in {meta['minutes']:.1f} minutes "
        f"(code `{meta['code']}`; load average {meta['load_before']} before, {meta['load_after']} "
        f"after; machine gauge {', '.join(f'{g:.0f}' for g in gauge)} ms per repeat), a run of its "
        "own: `benchmarks/results/airflow.json`. The same DAGs (`benchmarks/airflow_dags/`) ran "
        f"under Apache Airflow {meta['airflow']} with four `[core] xcom_backend` configurations, "
        f"{meta['repeats']} interleaved repeat(s) (every DAG under every configuration before the "
        "next DAG, the order rotated each repeat). The tasks time their own `ti.xcom_push` / "
        "`ti.xcom_pull` with `time.perf_counter`. Every DAG runs with `airflow dags test`, so all "
        "tasks of a DAG run share one process and reach Airflow's execution API in-process (its "
        "FastAPI app behind httpx's WSGI transport, the SQLite metadata database): that is "
        "Airflow's own round trip in every figure below. In a deployment the API server is "
        "reached over HTTP from a supervisor process, so that round trip is longer and the "
        "backends' own shares are the same. Cells are medians over the repeats "
        "(min..max when there were several).",
        "",
        "| configuration | `[core] xcom_backend` | where a value lives |",
        "|---|---|---|",
    ]
    where = {
        "default": "serialized by Airflow's serde into the metadata DB (the `xcom` table)",
        "objstore": f"values of ≥ {meta['threshold']:,} bytes of JSON in a file under "
                    "`file://<tmp>` (`AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH`), the path in "
                    "the metadata DB; smaller ones as the default",
        "xcombus_view": "a push event on Kafka (acks=all); the metadata DB holds a reference; "
                        "`xcombus.backends.ObjectStorageXCom` puts values above "
                        f"{meta['threshold']:,} bytes in a local directory; `python -m xcombus "
                        "materialize` runs, so pulls read the SQLite view",
        "xcombus_topic": "the same, with no view file: each pull fetches its one Kafka record",
    }
    for c in configs:
        lines.append(f"| {AIRFLOW_COLUMNS[c]} | `{res['configs'][c]['backend']}` | {where[c]} |")
    lines += ["", "### Targets", ""]
    rows = []
    for t in res.get("targets", []):
        value = f"{t['value']:+.2f} ms" if t["unit"] == "ms" else f"{t['value']:.2f}x"
        target = f"≤ {t['target']:g} ms" if t["unit"] == "ms" else f"≤ {t['target']:g}x"
        rows.append([t["label"], AIRFLOW_COLUMNS[t["config"]], t["how"], fmt(t["xcombus"]),
                     fmt(t["other"]), value, target, "**yes**" if t["met"] else "**no**"])
    lines += _table(["target", "configuration", "measured", "xcombus (ms)", "compared with (ms)",
                     "result", "target", "met?"],
                    ["---", "---", "---", "---:", "---:", "---:", "---:", "---"], rows)
    met_rows = [t for t in res.get("targets", []) if t["met"]]
    lines += [
        "",
        f"{len(met_rows)} of {len(res.get('targets', []))} target rows met. *Paired in one "
        "task* (`xcom_bench_ab`) alternates the same push (pull) through Airflow's default "
        "class, common-io's object-storage class and the configured backend (xcombus) in one "
        "task, rotating which goes first, so every arm sees the same process and the same "
        "moment of the shared machine; a row is the median over the rounds of xcombus minus "
        "the default (small values) or xcombus / object storage (1 MB, 10 MB). Under the "
        "default configuration the configured backend *is* Airflow's default class, a null "
        "comparison that shows the method's resolution: push "
        f"{_signed(get('default', 'ab_push_backend_diff'))} ms, pull "
        f"{_signed(get('default', 'ab_pull_backend_diff'))} ms. *Side by side* compares the "
        "separate DAG runs of each configuration (`xcom_bench_small`, `xcom_bench_sizes`), "
        "medians over the repeats; it carries the machine's drift between those runs, which "
        "on this shared VM moves a 10 ms operation by several milliseconds from one run to the "
        "next, more than the 2 ms being judged: read the paired rows for the verdict and the "
        "side-by-side rows as the view a user running one configuration at a time would get. "
        "What bounds the rows not met is analysed, with profiles, under *Targets not met: what "
        "bounds them* (*Inside Apache Airflow 3.3: what xcombus adds to a push and a pull*).",
        "",
        "### Medians per configuration",
        "",
    ]
    rows = [[label, unit, *[cell(c, fid) for c in configs]] for fid, label, unit in _airflow_rows(meta)
            if any(get(c, fid) is not None for c in configs)]
    lines += _table(["figure", "unit", *[AIRFLOW_COLUMNS[c] for c in configs]],
                    ["---", "---", *["---:"] * len(configs)], rows)
    fanin_runs = meta.get("fanin_dag_repeats", 1)
    whole = [get(c, "dag_fanin_run_s") for c in configs if get(c, "dag_fanin_run_s")]
    took = (f" ({fmt(min(whole))}..{fmt(max(whole))} s of run_duration each, nearly all of it "
            f"Airflow scheduling and running {meta['fanout']:,} task instances)" if whole else "")
    lines += [
        "",
        f"The fan-out DAG ran whole in {fanin_runs} repeat(s) per configuration{took}; the other "
        "repeats re-ran only its reducer on that DAG run (`airflow tasks test xcom_bench_fanin "
        "reduce <run_id>`), so the reducer's rows have a value per repeat and the fan-out's "
        "whole-DAG rows one per whole run. Values are lists of 100-character strings (1 KB ≈ 10 "
        "of them, 10 MB ≈ 100,000), which every backend serializes element by element. The "
        f"paired DAG (`xcom_bench_ab`) ran {meta.get('ab_n', meta['small'] // 2)} rounds of 1 KB "
        f"values and `{meta['size_reps']}` (bytes:count) of the large ones per repeat.",
        "",
    ]
    lines += _airflow_fanin(res, configs, get)
    lines += _airflow_profiles(res, configs)
    return lines


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _airflow_fanin(res: dict[str, Any], configs: list[str], get: Any) -> list[str]:
    meta, prof = res["meta"], res.get("profile", {})
    fanout = meta["fanout"]
    lines = [f"### The fan-in over {fanout:,} mapped instances: Airflow's per-item round trips", ""]
    rows = []
    for c in configs:
        it, sl = get(c, "fanin_iterate"), get(c, "fanin_slice")
        p = prof.get(c, {}).get("fanin")
        row = [AIRFLOW_COLUMNS[c], fmt(it) if it else "", fmt(sl) if sl else "",
               f"{it / sl:.0f}x" if it and sl else ""]
        if p:
            row += [f"{p['per_op_ms']:.2f}", f"{p['round_trip_ms']:.2f} ({p['round_trip_share']:.0%})",
                    f"{p['backend_ms']:.3f} ({p['backend_share']:.0%})"]
        else:
            row += ["", "", ""]
        rows.append(row)
    lines += _table(["configuration", f"iterate {fanout:,} items (ms)", "`values[:]` (ms)",
                     "iterate / slice", "profiled: ms per item", "of which Airflow's round trip",
                     "of which the backend's `deserialize_value`"],
                    ["---", "---:", "---:", "---:", "---:", "---:", "---:"], rows)
    d_it, d_sl = get("default", "fanin_iterate"), get("default", "fanin_slice")
    x_it, x_sl = get("xcombus_view", "fanin_iterate"), get("xcombus_view", "fanin_slice")
    lines += [
        "",
        "A reducer that iterates its mapped input (`for v in values`, `list(values)`, "
        "`sum(values)`) walks Airflow's `LazyXComSequence` one index at a time: each "
        "`LazyXComIterator.__next__` calls `LazyXComSequence.__getitem__(i)`, which sends one "
        "`GetXComSequenceItem` message to the supervisor (`SUPERVISOR_COMMS.send`), which makes "
        "one execution-API request (`GET /xcoms/{dag}/{run}/{task}/{key}/item/{i}`, one SQL "
        "query), and only then calls the backend's `deserialize_value` on the one value it got "
        "back; the iteration ends with one more request that fails with 404. The profiles "
        "(cProfile of the task's thread during a second, untimed iteration; the API's own work "
        "shows as the wait for its reply) put "
        f"{_share(prof, configs, 'round_trip_share')} of each item in that round trip under every "
        "backend, and the backend's `deserialize_value` at "
        f"{_share(prof, configs, 'backend_share')}: whatever the backend, the fan-in costs "
        "Airflow's round trip times the number of mapped instances. xcombus resolves each "
        "reference from the view (or with one record fetch) inside that loop, and that is not "
        "what the reducer waits for.",
        "",
        "**What would remove the per-item round trips.**",
        "",
        "- *In a DAG, today:* take the whole sequence at once: `values[:]` (or "
        "`ti.xcom_pull(task_ids='mapped')`) is one `GetXComSequenceSlice` request for every map "
        "index, then one `deserialize_value` per item in the task"
        + (f": {fmt(d_sl)} ms instead of {fmt(d_it)} ms for {fanout:,} items under Airflow's "
           f"default, {fmt(x_sl)} ms instead of {fmt(x_it)} ms under xcombus with a view"
           if d_it and d_sl and x_it and x_sl else "") + ".",
        "- *In Airflow:* let `LazyXComIterator` fetch pages (`GetXComSequenceSlice` with "
        "`start`/`stop`, say 100 or 1,000 items per request) and serve the next items from the "
        "page, and stop at the known `len()` instead of at a 404; `__getitem__(i)` for random "
        "access can stay as it is. The same change removes the round trips of `list(values)` "
        "and of operators that iterate a mapped `XComArg`.",
        "- *In the backend:* nothing in `deserialize_value` can remove a round trip Airflow "
        "makes before calling it. Once Airflow hands a backend a page of stored values, a "
        "batch hook (resolve many xcombus references with one view query, or one fetch per "
        "partition) would shave the remaining backend share, which is small next to the round "
        "trips.",
        "",
    ]
    return lines


def _share(prof: dict[str, Any], configs: list[str], key: str) -> str:
    shares = [prof[c]["fanin"][key] for c in configs if prof.get(c, {}).get("fanin")]
    if not shares:
        return "(not profiled)"
    lo, hi = min(shares), max(shares)
    return f"{lo:.0%}" if f"{lo:.0%}" == f"{hi:.0%}" else f"{lo:.0%}..{hi:.0%}"


def _airflow_profiles(res: dict[str, Any], configs: list[str]) -> list[str]:
    prof = res.get("profile", {})
    if not prof:
        return []
    lines = [
        "### Where a push and a pull spend their time (profiles)",
        "",
        f"cProfile of the task's thread during {res['meta']['small']:,} untimed 1 KB pushes and "
        "then pulls (`xcom_bench_small` with `XCOMBUS_BENCH_PROFILE`, after one push that opens "
        "the connections); cProfile slows Python code, so read shares rather than absolute "
        "times. *Airflow's round trip* is `SUPERVISOR_COMMS.send` (the request to the execution "
        "API and its reply); *the backend* is its `serialize_value` / `deserialize_value`, which "
        "for xcombus includes publishing the event and waiting for the broker's "
        "acknowledgement (the *wait for the loop thread* column).",
        "",
    ]
    rows = []
    for c in configs:
        for kind in ("push", "pull"):
            p = prof.get(c, {}).get(kind)
            if not p:
                continue
            wait = p.get("xcombus_wait_ms")
            rows.append([AIRFLOW_COLUMNS[c], kind, f"{p['per_op_ms']:.2f}",
                         f"{p['round_trip_ms']:.2f} ({p['round_trip_share']:.0%})",
                         f"{p['backend_ms']:.3f} ({p['backend_share']:.0%})",
                         f"{wait:.3f}" if wait is not None else ""])
    lines += _table(["configuration", "operation", "ms per operation", "Airflow's round trip (ms)",
                     "the backend (ms)", "xcombus: wait for its loop thread (ms)"],
                    ["---", "---", "---:", "---:", "---:", "---:"], rows)
    lines.append("")
    for c in ("xcombus_view", "xcombus_topic"):
        for kind in ("push", "pull"):
            p = prof.get(c, {}).get(kind)
            if p and p.get("xcombus_cum"):
                top = ", ".join(f"`{r['function']}` {r['cum_per_op_ms']:.3f}"
                                for r in p["xcombus_cum"][:6])
                lines.append(f"- {AIRFLOW_COLUMNS[c]}, {kind}: xcombus functions by cumulative ms "
                             f"per operation: {top}.")
    return lines


# -- markdown -------------------------------------------------------------------------------
def _table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


def _stats(values: list[float]) -> list[str]:
    return [fmt(median(values)), fmt(min(values)), fmt(max(values)), str(len(values))]


def markdown(res: dict[str, Any], images: list[tuple[str, str]], img_rel: str,
             history: Sequence[dict[str, Any]] = (), history_where: str = "history.jsonl",
             airflow: dict[str, Any] | None = None) -> str:
    vals, meta = res["values"], res["meta"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {meta['date']} by `{meta['command']}` in {meta['minutes']:.1f} minutes "
        "(this file and the plots are written by that command).",
        "",
        "**Read the figures with the machine in mind.** A 2-core VM runs everything at once: the "
        "Kafka broker (a JVM), the benchmark process, and for some figures a materializer process "
        "and a view poller, so producer, broker and materializer compete for the same two cores. "
        "Another engineer ran tests on the same machine at times during the run (load average "
        f"{meta['load_before']} before the run, {meta['load_after']} after it), so some repeats "
        "carry noise: the min..max range shows how much. Tests never assert timings.",
        "",
        "## Machine",
        "",
        *[f"- {name}: {value}" for name, value in meta["machine"]],
        "",
        "## Command",
        "",
        "```",
        "pip install -e '.[bench]'        # matplotlib, sqlalchemy, psutil",
        "python benchmarks/run.py          # the full suite, about 5 minutes; writes this file",
        "python benchmarks/run.py --quick  # 100k-event backlog, 1 repeat: about a minute",
        "```",
        "",
        "With no `XCOMBUS_BOOTSTRAP_SERVERS` set, `run.py` starts its own local broker "
        f"(`xcombus.broker.LocalBroker`, port {meta['broker_port']}, a temporary home) and stops "
        "it at the end. `--quick` writes to `benchmarks/results/quick/` instead of `docs/`. "
        "`python benchmarks/report.py` re-renders this file and the plots from "
        "`benchmarks/results/latest.json` without measuring.",
        "",
        f"**Repeats.** The cheap figures (push, pull, fan-in, push → visible, the baseline) were "
        f"measured {meta['repeats']} times, each on a fresh topic and view file; the "
        f"{meta['backlog']:,}-event figures (drain, RSS, rebuild, pulls on the big view) "
        f"{meta['big_repeats']} times over one backlog written once (a topic is immutable; every "
        "repeat drains it into a fresh view file with a fresh consumer group). Tables give the "
        "median and the range over the repeats; a latency row is a percentile within each "
        "repeat, then the median of those. Untimed warm-ups (20,000 pushes, a 20,000-event "
        "drain) come first.",
        "",
        "## Results against the targets",
        "",
    ]
    rows = []
    for fid, label, unit, op, target in TARGETS:
        v = vals.get(fid)
        if not v:
            rows.append([_fill(label, meta), f"{op} {fmt(target)} {unit}", "not run", "", "", "", ""])
            continue
        ok = met(op, median(v), target)
        rows.append([_fill(label, meta), f"{op} {fmt(target)} {unit}", *_stats(v)[:3], str(len(v)),
                     "**yes**" if ok else f"**no** ({headroom(op, median(v), target):.2f}x)"])
    lines += _table(["target (the issue's row)", "target", "median", "min", "max", "repeats", "met?"],
                    ["---", "---:", "---:", "---:", "---:", "---:", "---"], rows)
    lines += ["", "*x* in \"no (x)\" is the headroom factor: measured/target for a throughput, "
              "target/measured for a time or a size.", ""]
    history = comparable(history, meta)
    if len(history) > 1:
        lines += _across_runs(history, meta, history_where)
    lines += ["## Other figures", ""]
    rows = [[_fill(label, meta), unit, *_stats(vals[fid])] for fid, label, unit in OTHERS if fid in vals]
    lines += _table(["figure", "unit", "median", "min", "max", "repeats"],
                    ["---", "---", "---:", "---:", "---:", "---:"], rows)
    lines += [
        "",
        "## Side by side: an Airflow-style SQL XCom table",
        "",
        "`benchmarks/baseline_sql.py` keeps XComs as Airflow 2.10 does: a SQLAlchemy model of "
        "Airflow's `xcom` table (`dag_run_id, task_id, map_index, key, dag_id, run_id, value BLOB, "
        "timestamp`, primary key `(dag_run_id, task_id, map_index, key)`, Airflow's two indexes "
        "and its foreign key to `task_instance`) in a SQLite file with SQLite's default settings, "
        f"as Airflow's SQLite metadata database has them: `{meta.get('baseline_pragmas')}` "
        "(rollback journal, *not* WAL; every commit is fsynced). A push looks the DAG run up, "
        "deletes the previous row and inserts the new one in its own committed transaction "
        "(`XCom.set`); a pull is one query joined to `dag_run` (`XCom.get_one`); a fan-in is one "
        "`IN` query over the map indexes. It ran in the same run, on the same machine, between "
        f"the xcombus figures of each repeat, with {meta['baseline_pushes']:,} sequential pushes "
        "from 200 task instances (a single-file SQLite database has one writer at a time: "
        "concurrent writers would queue on its lock), 2,000 pulls and 200 fan-ins. It keeps "
        "SQLAlchemy's connection pool open and runs none of Airflow's own code around a push, "
        "which favours it: for scale, Airflow 2.10.5's own XCom model on SQLite measured 96 "
        "pushes/s committed, `get_one` p50 4.5 ms and a fan-in over 100 tasks 22.5 ms.",
        "",
    ]
    rows = [[label, unit, *_stats(vals[fid])] for fid, label, unit in BASELINE if fid in vals]
    lines += _table(["baseline figure", "unit", "median", "min", "max", "repeats"],
                    ["---", "---", "---:", "---:", "---:", "---:"], rows)
    lines += ["", "Ratios of medians, xcombus / baseline:", ""]
    rows = []
    for x, scale, b, label, higher in RATIOS:
        if x in vals and b in vals:
            xv, bv = median(vals[x]) * scale, median(vals[b])
            r = xv / bv
            better = (r if higher else 1 / r)
            rows.append([label, f"{r:.3g}", f"xcombus {better:.3g}x "
                         f"{'higher' if higher else 'faster'}" if better >= 1 else
                         f"baseline {1 / better:.3g}x {'higher' if higher else 'faster'}"])
    lines += _table(["figure", "xcombus / baseline", "reading"], ["---", "---:", "---"], rows)
    scale = [(label, x, factor, airflow, unit) for label, x, factor, airflow, unit in AIRFLOW if x in vals]
    if scale:
        lines += ["", "For scale only (not measured in this run): the same xcombus medians against the "
                  "figures the issue quotes for Airflow 2.10.5's own XCom model on SQLite. The baseline "
                  "above is faster than those, presumably because it keeps SQLAlchemy's connection pool "
                  "open and runs none of Airflow's code around a call; that difference was not measured "
                  "here.", ""]
        rows = [[label, f"{fmt(median(vals[x]) * factor)} {unit}", f"{fmt(airflow)} {unit}",
                 f"{median(vals[x]) * factor / airflow:.3g}"] for label, x, factor, airflow, unit in scale]
        lines += _table(["figure", "xcombus (this run)", "Airflow 2.10.5 (issue)", "xcombus / Airflow"],
                        ["---", "---:", "---:", "---:"], rows)
    if airflow is not None:
        lines += ["", *airflow_markdown(airflow)]
    lines += ["", "## Plots", ""]
    for name, caption in images:
        lines += [f"![{caption}]({img_rel}/{name})", "", f"*{caption}*", ""]
    missed = [(fid, label, unit, op, target) for fid, label, unit, op, target in TARGETS
              if fid in vals and not met(op, median(vals[fid]), target)]
    lines += ["## Targets not met: what bounds them", ""]
    if missed:
        lines += ["Missed in this run: " + "; ".join(
            f"{_fill(label, meta)} ({fmt(median(vals[fid]))} {unit} against {op} {fmt(target)} {unit})"
            for fid, label, unit, op, target in missed) + ".", ""]
    else:
        lines += ["Every target was met in this run.", ""]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().strip(), ""]
    lines += ["## How each figure is measured", "", *[f"**{t}.** {_fill(d, meta)}\n" for t, d in HOW]]
    lines += ["All durations are `time.perf_counter()` in the benchmark process, except push → "
              "visible (`CLOCK_MONOTONIC` in two processes). Raw results: "
              "`benchmarks/results/latest.json`.", ""]
    return "\n".join(lines)


HOW: tuple[tuple[str, str], ...] = (
    ("Push throughput",
     "One process, one `XComBus` without a materializer. N coroutines (1,000 for the target; "
     "200 and 5,000 too), each owning its own task instance, push small ints "
     "(`await ti.xcom_push('value', i)`) until 100,000 pushes in total have returned, i.e. "
     "every one was acknowledged by the broker (`acks=all`, idempotent producer). Throughput is "
     "pushes divided by the wall time from the first push to the last acknowledgement, after N "
     "untimed pushes that connect every partition. Each coroutine awaits its acknowledgement "
     "before its next push, so at most N pushes are in flight. The same figure runs on "
     "asyncio's standard event loop (in the benchmark process) and, when uvloop is installed, "
     "on uvloop (`benchmarks/push_on_uvloop.py`, its own process: a loop is chosen per "
     "process); the record row pushes `bench_pipeline.RECORD` instead of ints. Event batches "
     "are compressed with the default codec (zstd)."),
    ("Single push latency",
     "One task instance awaits `xcom_push` of a 20-byte string 2,000 times in a row after 200 "
     "untimed pushes; each push is timed from the call until it returns (broker "
     "acknowledgement included)."),
    ("Materializer drain and peak RSS",
     "The backlog is {backlog} pushes written once by 1,000 coroutines: every event a "
     "different XCom (DAG runs x 10 tasks x 250 map indexes x 4 keys, 22-byte strings), so "
     "the view ends with {backlog} rows. Each repeat spawns `python -m consumers.materializer` "
     "with the default settings, a fresh view file and a fresh consumer group; the clock runs "
     "from the spawn (interpreter start-up, imports, opening the view, joining the group) until "
     "the view's `offsets` table, polled read-only every 20 ms, reaches the topic's end "
     "offsets. Memory counts the materializer *and its view-writer child process*: their "
     "summed RSS is sampled every 20 ms with psutil, and the peak reported is the sum of each "
     "process's own high-water mark (`VmHWM` in `/proc/<pid>/status`, read before the "
     "processes stop), an upper bound of their peak together. The CPU time of each process "
     "(user + system, psutil) divided by the events gives the CPU per event of each side, a "
     "steadier figure than the rate on a shared machine. Each run checks the view applied "
     "every event exactly once and holds one row per event."),
    ("Pull one key",
     "An `XComBus(materialize=True)` pushes one value and reads it back once with "
     "read-your-writes; then `xcom_pull(task_ids='extract', key='value', map_indexes=-1, ...)` "
     "is timed 2,000 times after 200 untimed pulls, eventual and read-your-writes (the default). "
     "A read-your-writes pull asks the broker for the end offset of the task instance's "
     "partition (a ListOffsets round trip), compares it with the applied offsets, then queries "
     "the view. The million-row rows pull random keys of the drained backlog's view from a "
     "process with no materializer, the deployment's shape (the offsets come from the view "
     "file)."),
    ("Fan-in pull",
     "`return_value` is pushed for map indexes 0..999 of task `mapped`; then "
     "`xcom_pull(task_ids='mapped')` (every map index, in order, 1,000 values) is timed 200 "
     "times after 20 untimed pulls, read-your-writes (the default: end offsets of every "
     "partition, since any map index may sit on any) and eventual."),
    ("Push → visible",
     "The materializer runs as its own process (`python -m consumers.materializer`). This "
     "process pushes at {rate} pushes/s for the configured seconds (a pacer starts each push "
     "at its scheduled time; 1,000 task instances round robin) and records when each push "
     "was called and its receipt. A third process polls the view read-only every 0.5 ms and "
     "records each change of the `offsets` table; rows and offsets commit in one transaction, "
     "so a push is visible from the first poll at which its partition's `next_offset` passed "
     "its offset. Latency = that moment - the call; the poll interval adds up to 0.5 ms. The "
     "acknowledgement rows time the same pushes until `xcom_push` returned."),
    ("Rebuild",
     "`xcombus.audit.rebuild(settings, into=<new file>)` of the whole backlog, in the "
     "benchmark process, timed end to end (connecting, reading end offsets, folding, writing, "
     "the final checkpoint); each run checks the event and row counts."),
)


def render(results: Path, out: Path, img: Path, draw: bool = True) -> None:
    """Write the report (and, with ``draw``, the plots; without, it links the plots already
    in ``img``: re-rendering the text needs no matplotlib)."""
    res = json.loads(results.read_text())
    history = history_path(results)
    runs = read_history(history)
    where = os.path.relpath(history, REPO) if history.is_relative_to(REPO) else str(history)
    images = plots(res, img) if draw else [(n, c) for n, c in PLOTS.items() if (img / n).exists()]
    rel = os.path.relpath(img, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(res, images, rel, runs, where, read_airflow(results)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--img", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--no-plots", action="store_true",
                        help="re-render the text only, linking the plots already in --img")
    args = parser.parse_args()
    render(args.results, args.out, args.img, draw=not args.no_plots)
    print(f"wrote {args.out}" + ("" if args.no_plots else f" and the plots in {args.img}"))


if __name__ == "__main__":
    main()
