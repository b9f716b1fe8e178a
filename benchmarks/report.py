"""Render a results file (written by ``benchmarks/run.py``) into docs/benchmarks.md and plots.

    python benchmarks/report.py [--results benchmarks/results/latest.json] [--out docs/benchmarks.md]
                                [--img docs/img]

``run.py`` calls this at the end of a run; calling it alone re-renders without measuring.
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
    out.append(("targets.png", "Every target, as headroom: bars right of 1 are met, left of 1 missed."))

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
    out.append(("latency.png", "Latency distributions of pushes, pulls and fan-in, xcombus "
                "(solid) against the SQL baseline (dashed)."))

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
        out.append(("baseline.png", "xcombus against the Airflow-style SQLAlchemy/SQLite baseline "
                    "(medians; log scale where the bars differ by more than 20x)."))

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
        out.append(("materializer_rss.png", "Materializer RSS, with its view-writer child (sampled "
                    "every 20 ms), and progress through the backlog."))

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
        out.append(("push_throughput.png", "Push throughput against concurrency (median, "
                    "min..max), with the target and the baseline."))
    return out


# -- markdown -------------------------------------------------------------------------------
def _table(header: list[str], align: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


def _stats(values: list[float]) -> list[str]:
    return [fmt(median(values)), fmt(min(values)), fmt(max(values)), str(len(values))]


def markdown(res: dict[str, Any], images: list[tuple[str, str]], img_rel: str,
             history: Sequence[dict[str, Any]] = (), history_where: str = "history.jsonl") -> str:
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


def render(results: Path, out: Path, img: Path) -> None:
    res = json.loads(results.read_text())
    history = history_path(results)
    runs = read_history(history)
    where = os.path.relpath(history, REPO) if history.is_relative_to(REPO) else str(history)
    images = plots(res, img)
    rel = os.path.relpath(img, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(res, images, rel, runs, where))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--img", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args()
    render(args.results, args.out, args.img)
    print(f"wrote {args.out} and the plots in {args.img}")


if __name__ == "__main__":
    main()
