"""Render a results file (written by the suite) into docs/benchmarks.md and the plots.

    python -m benchmarks.report [--results benchmarks/results/latest.json] [--out docs/benchmarks.md]
                                [--img docs/img] [--no-plots]

The suite calls :func:`render` at the end of a run; run alone it re-renders without
measuring (``--no-plots``: the text only, no matplotlib needed). When
``benchmarks/bench_airflow.py`` left ``airflow.json`` beside the results file, the report
gains its "Inside Apache Airflow 3.3" section (``airflow_report.py``). The analysis of what
bounds the targets is hand-written (it comes from profiles, not from this run's numbers) and
kept in ``benchmarks/analysis.md``, which is included verbatim. Labels, units and targets
come from ``figures.py``, the plots from ``plots.py``, the history from ``history.py``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.airflow_report import airflow_markdown, read_airflow
from benchmarks.common import REPO, fmt, table
from benchmarks.figures import (
    AIRFLOW,
    BASELINE,
    OTHERS,
    RATIOS,
    TARGETS,
    fill_label,
    headroom,
    median,
    met,
)
from benchmarks.history import comparable, history_path, read_history
from benchmarks.plots import PLOTS, plots

DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "latest.json"
ANALYSIS = REPO / "benchmarks" / "analysis.md"


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
        rows.append([f"{fill_label(label, meta)} ({op} {fmt(target)} {unit})", *cells, f"{hits} of {seen}"])
    return [
        "## Across runs",
        "",
        f"The last {len(runs)} runs of the suite on this machine with this run's sizes "
        f"(`{where}`, one line per run), each cell the run's median; **bold** is a miss. "
        "The same code "
        "measured in different phases of the VM differs by more than most changes do, so read "
        "a figure against the machine gauge of its run, and a change against several runs.",
        "",
        *table(header, ["---", *["---:"] * len(runs), "---:"], rows),
        "",
    ]


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
        "`python -m benchmarks.report` re-renders this file and the plots from "
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
            rows.append([fill_label(label, meta), f"{op} {fmt(target)} {unit}", "not run", "", "", "", ""])
            continue
        ok = met(op, median(v), target)
        rows.append([fill_label(label, meta), f"{op} {fmt(target)} {unit}", *_stats(v)[:3], str(len(v)),
                     "**yes**" if ok else f"**no** ({headroom(op, median(v), target):.2f}x)"])
    lines += table(["target (the issue's row)", "target", "median", "min", "max", "repeats", "met?"],
                    ["---", "---:", "---:", "---:", "---:", "---:", "---"], rows)
    lines += ["", "*x* in \"no (x)\" is the headroom factor: measured/target for a throughput, "
              "target/measured for a time or a size.", ""]
    history = comparable(history, meta)
    if len(history) > 1:
        lines += _across_runs(history, meta, history_where)
    lines += ["## Other figures", ""]
    rows = [[fill_label(label, meta), unit, *_stats(vals[fid])] for fid, label, unit in OTHERS if fid in vals]
    lines += table(["figure", "unit", "median", "min", "max", "repeats"],
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
    lines += table(["baseline figure", "unit", "median", "min", "max", "repeats"],
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
    lines += table(["figure", "xcombus / baseline", "reading"], ["---", "---:", "---"], rows)
    scale = [(label, x, factor, airflow, unit) for label, x, factor, airflow, unit in AIRFLOW if x in vals]
    if scale:
        lines += ["", "For scale only (not measured in this run): the same xcombus medians against the "
                  "figures the issue quotes for Airflow 2.10.5's own XCom model on SQLite. The baseline "
                  "above is faster than those, presumably because it keeps SQLAlchemy's connection pool "
                  "open and runs none of Airflow's code around a call; that difference was not measured "
                  "here.", ""]
        rows = [[label, f"{fmt(median(vals[x]) * factor)} {unit}", f"{fmt(airflow)} {unit}",
                 f"{median(vals[x]) * factor / airflow:.3g}"] for label, x, factor, airflow, unit in scale]
        lines += table(["figure", "xcombus (this run)", "Airflow 2.10.5 (issue)", "xcombus / Airflow"],
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
            f"{fill_label(label, meta)} ({fmt(median(vals[fid]))} {unit} against {op} {fmt(target)} {unit})"
            for fid, label, unit, op, target in missed) + ".", ""]
    else:
        lines += ["Every target was met in this run.", ""]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().strip(), ""]
    lines += ["## How each figure is measured", "", *[f"**{t}.** {fill_label(d, meta)}\n" for t, d in HOW]]
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
     "the view ends with {backlog} rows. Each repeat spawns `xcombus materialize` "
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
     "The materializer runs as its own process (`xcombus materialize`). This "
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
    ("History of one XCom",
     "`benchmarks/bench_history.py`. One *tracked* XCom's 13 events are woven into the "
     "{backlog}-event backlog as it is written, evenly spread (try 1 pushes 3 versions, try 2 "
     "clears and pushes 2, a zombie try 1 pushes once more, fenced, try 2 pushes 2, try 3 clears "
     "and pushes 3: 10 applied versions), and into a {small}-event backlog written the same way "
     "(its view rebuilt). After each drain, `await xcombus.audit.history(settings, dag, run, "
     "task, key, view=...)` is timed 50 times on each view, alternately, after 3 untimed calls "
     "each (fewer, at least 5, when 50 pairs would take over a minute), as a user calls it: each "
     "call opens the view, reads the version index, starts its own fetcher and fetches the 13 "
     "records by position, then reads the partition past the view's offsets (nothing: the view "
     "is caught up). The scan rows call it with `view=` a missing file: it reads the XCom's "
     "partition from offset 0 (3 calls per topic). Every call's answer is checked (13 entries, "
     "push/clear/fenced as the script says). The backlog's drain and rebuild include the 13 "
     "events."),
    ("View and index size",
     "SQLite's `dbstat` (pages per table, so the WAL's state does not matter) on the drained "
     "view: the whole file per event, and the version index's tables (`xcom_version`, `name`, "
     "`ti_try`) per event. The suite's backlog pushes every XCom once, and a current row is its "
     "own index entry, so its index holds only the tracked XCom; the index-size rows drain a "
     "{versions}-event backlog whose XComs are each pushed 4 times, a pass apart (event *i* is "
     "XCom *i* mod {versions}/4), with `xcombus materialize`: 3 pushes of 4 are index rows."),
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
