"""XComs inside Apache Airflow 3.3: the same DAGs under Airflow's default backend, the
common-io object-storage backend and xcombus, side by side in one run.

    pip install -e '.[bench]'
    python benchmarks/run.py --airflow              # 3 interleaved repeats, the issue's sizes (~20 min)
    python benchmarks/run.py --airflow --quick      # 1 repeat, small counts (~4 min), results elsewhere
    python -m benchmarks.bench_airflow [--quick]    # the same, this module alone (more options)

The DAGs are ``benchmarks/airflow_dags/xcom_bench.py``: their tasks time ``ti.xcom_push``
and ``ti.xcom_pull`` themselves and write the samples to ``XCOMBUS_BENCH_OUT``. Each DAG
runs with ``airflow dags test`` (Airflow 3.3.2 in the cached virtual environment of
``tests/airflow_env.py``, with this checkout installed) under four configurations:

- ``default``: Airflow's own backend (``airflow.sdk.execution_time.xcom.BaseXCom``: the
  value, serialized by Airflow's serde, travels through the execution API into the metadata
  database, SQLite here);
- ``objstore``: ``airflow.providers.common.io.xcom.backend.XComObjectStorageBackend`` on a
  local directory (``file://``), threshold 65,536 bytes;
- ``xcombus_view``: ``xcombus.airflow.XComBusBackend`` with ``xcombus.backends.ObjectStorageXCom``
  (a local directory, the same 65,536-byte threshold) and ``python -m xcombus materialize``
  running: pulls read the local view;
- ``xcombus_topic``: the same without a view file: every pull fetches its one Kafka record.

Each configuration has its own AIRFLOW_HOME (a copy of one migrated SQLite database) and,
for xcombus, its own topic. Within a repeat every DAG runs under every configuration before
the next DAG, in an order rotated by the repeat. The 1,000-instance fan-out DAG runs whole
in the first ``--fanin-dag-repeats`` repeats (≈ 2 min each); later repeats re-run only its
reducer on that DAG run (``airflow tasks test xcom_bench_fanin reduce <run_id>``). At the
end each configuration runs the small DAG and the reducer once more, untimed, under cProfile
(``XCOMBUS_BENCH_PROFILE``). The broker is ``XCOMBUS_BOOTSTRAP_SERVERS`` when set;
otherwise a local one is started on ``--broker-port`` (default 39092) and stopped at the end.

The xcombus measured is ``xcombus/`` as committed at HEAD when the run starts: a copy put
first on ``PYTHONPATH`` of every Airflow and xcombus process (others commit to this checkout
while a run lasts; ``--live-code`` measures the working tree instead).

Results: ``benchmarks/results/airflow.json`` (``--quick``: ``benchmarks/results/quick/``);
``benchmarks/report.py`` renders them into the "Inside Apache Airflow 3.3" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import MATERIALIZER_CMD, REPO, fmt, log, machine_gauge, percentile
from tests.airflow_env import AirflowEnv, airflow_env, ensure_venv  # the cached Airflow environments
from xcombus import Settings

AIRFLOW_VERSION = "3.3.2"
DAGS = REPO / "benchmarks" / "airflow_dags"
PORT = 39092
THRESHOLD = 65_536
SIZES = (1024, 1_048_576, 10_485_760)
SIZE_LABEL = {1024: "1 KB", 1_048_576: "1 MB", 10_485_760: "10 MB"}
XCOMBUS = ("xcombus_view", "xcombus_topic")

#: name -> (label, [core] xcom_backend)
CONFIGS: dict[str, tuple[str, str]] = {
    "default": ("Airflow's default backend (metadata DB)", "airflow.sdk.execution_time.xcom.BaseXCom"),
    "objstore": ("common-io object storage (local dir)",
                 "airflow.providers.common.io.xcom.backend.XComObjectStorageBackend"),
    "xcombus_view": ("xcombus, materializer running (view reads)", "xcombus.airflow.XComBusBackend"),
    "xcombus_topic": ("xcombus, no view (one Kafka fetch per pull)", "xcombus.airflow.XComBusBackend"),
}
DAG_IDS = ("xcom_bench_small", "xcom_bench_ab", "xcom_bench_sizes", "xcom_bench_fanin")

_RUN_DONE = re.compile(r"DagRun Finished: dag_id=(\S+?), .*?run_id=(\S+?), .*?run_duration=([0-9.]+)")
_COUNTS = re.compile(r"xcombus: (\d+) pushes, (\d+) clears, (\d+) reads from the view, "
                     r"(\d+) records fetched from the topic")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class Config:
    """One backend configuration: its AIRFLOW_HOME, environment and (xcombus) topic/view."""

    def __init__(self, name: str, af: AirflowEnv, work: Path, bootstrap: str, sizes: dict[str, str],
                 code: Path | None) -> None:
        self.name = name
        self.af = af
        self.work = work
        self.code = code
        self.out = work / f"{name}.jsonl"
        self.run_ids: dict[str, str] = {}
        backend = CONFIGS[name][1]
        extra = {"AIRFLOW__CORE__XCOM_BACKEND": backend, "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                 "XCOMBUS_BENCH_OUT": str(self.out), **sizes}
        if code is not None:  # the snapshot comes before the editable install on sys.path
            extra["PYTHONPATH"] = str(code)
        # Every configuration can reach common-io's object storage: the paired DAG uses its
        # class directly; it is the configured backend only under "objstore".
        af_objects = work / f"{name}-common-io-objects"
        af_objects.mkdir()
        extra.update(AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_PATH=f"file://{af_objects}",
                     AIRFLOW__COMMON_IO__XCOM_OBJECTSTORAGE_THRESHOLD=str(THRESHOLD))
        self.settings: Settings | None = None
        if name in XCOMBUS:
            objects = work / f"{name}-xcombus-objects"
            objects.mkdir()
            self.settings = Settings.from_env(
                {}, bootstrap_servers=bootstrap, topic=f"xcombus.bench.airflow.{name}.{os.getpid()}",
                view_path=str(work / f"{name}.db"), xcom_backend="xcombus.backends.ObjectStorageXCom",
                object_storage_path=str(objects), object_storage_threshold=THRESHOLD)
        self.env = af.env(self.settings, **extra)
        self.profile_env = dict(self.env, XCOMBUS_BENCH_PROFILE=str(work / f"{name}.prof"))

    def xcombus_env(self) -> dict[str, str]:
        """The environment of the xcombus CLI (topic create, materialize) for this config."""
        assert self.settings is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("XCOMBUS_")}
        env.update({k: v for k, v in self.env.items() if k.startswith("XCOMBUS_") and
                    not k.startswith("XCOMBUS_BENCH")})
        env.pop("PYTHONPATH", None)
        if self.code is not None:
            env["PYTHONPATH"] = str(self.code)
        return env


# -- running DAGs ------------------------------------------------------------------------------
def _read_out(path: Path) -> dict[str, dict[str, Any]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {line["figure"]: line for line in lines}


def _fail(what: str, done: subprocess.CompletedProcess[str]) -> None:
    raise RuntimeError(f"{what} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def _counts(text: str) -> dict[str, int] | None:
    found = _COUNTS.findall(text)
    if not found:
        return None
    return dict(zip(("pushes", "clears", "view_reads", "topic_reads"),
                    [sum(int(f[i]) for f in found) for i in range(4)], strict=True))


def run_dag(cfg: Config, dag_id: str, timeout: float, profile: bool = False) -> dict[str, Any]:
    """``airflow dags test DAG`` under ``cfg``: samples, wall time, Airflow's run_duration."""
    cfg.out.unlink(missing_ok=True)
    started = time.perf_counter()
    done = cfg.af.run("dags", "test", dag_id, env=cfg.profile_env if profile else cfg.env,
                      timeout=timeout)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        _fail(f"airflow dags test {dag_id} ({cfg.name})", done)
    text = done.stdout + done.stderr
    finished = [m for m in _RUN_DONE.findall(text) if m[0] == dag_id]
    run_s = float(finished[-1][2]) if finished else None
    if finished and not profile:
        cfg.run_ids[dag_id] = finished[-1][1]
    return {"figures": _read_out(cfg.out), "wall_s": wall, "run_s": run_s, "counts": _counts(text)}


def run_reducer(cfg: Config, timeout: float, profile: bool = False) -> dict[str, Any]:
    """The fan-in DAG's reducer alone, on the DAG run of an earlier ``dags test``."""
    cfg.out.unlink(missing_ok=True)
    run_id = cfg.run_ids["xcom_bench_fanin"]
    done = cfg.af.run("tasks", "test", "xcom_bench_fanin", "reduce", run_id,
                      env=cfg.profile_env if profile else cfg.env, timeout=timeout)
    if done.returncode != 0:
        _fail(f"airflow tasks test xcom_bench_fanin reduce ({cfg.name})", done)
    return {"figures": _read_out(cfg.out), "counts": _counts(done.stdout + done.stderr)}


def figures_of(dag_id: str, got: dict[str, Any]) -> dict[str, float]:
    """One repeat's figures (ms unless named _s) from a DAG's samples."""
    f = got["figures"]
    out: dict[str, float] = {}

    def ms(xs: list[float]) -> list[float]:
        return [x * 1e3 for x in xs]

    if dag_id == "xcom_bench_small":
        for op in ("push", "pull"):
            s = ms(f[f"{op}_1k"]["seconds"])
            out.update({f"{op}_1k_p50": median(s), f"{op}_1k_p90": percentile(s, 90),
                        f"{op}_1k_mean": statistics.fmean(s), f"{op}_1k_first": s[0],
                        f"{op}_1k_warm_p50": median(s[1:] or s)})
    elif dag_id == "xcom_bench_ab":
        for op in ("push", "serialize", "pull", "deserialize"):
            arms = {arm: ms(f[f"ab_{op}_{arm}"]["seconds"]) for arm in ("default", "objstore", "backend")}
            for arm, samples in arms.items():
                out[f"ab_{op}_{arm}"] = median(samples)
            for arm in ("objstore", "backend"):  # each round ran the arms back to back
                out[f"ab_{op}_{arm}_diff"] = median(
                    [y - x for x, y in zip(arms["default"], arms[arm], strict=True)])
        for n in SIZES[1:]:
            for op in ("push", "pull"):
                if f"ab_{op}_{n}_backend" not in f:
                    continue
                o, b = ms(f[f"ab_{op}_{n}_objstore"]["seconds"]), ms(f[f"ab_{op}_{n}_backend"]["seconds"])
                out.update({f"ab_{op}_{n}_objstore": median(o), f"ab_{op}_{n}_backend": median(b),
                            f"ab_{op}_{n}_ratio": median([y / x for x, y in zip(o, b, strict=True)])})
    elif dag_id == "xcom_bench_sizes":
        for n in SIZES:
            for op in ("push", "pull"):
                if f"{op}_{n}" in f:
                    out[f"{op}_{n}"] = median(ms(f[f"{op}_{n}"]["seconds"]))
    else:
        items = ms(f["fanin_item"]["seconds"])
        n = f["fanin_item"]["items"]
        out.update({"fanin_items": n, "fanin_iterate": ms(f["fanin_iterate"]["seconds"])[0],
                    "fanin_item_p50": median(items), "fanin_item_p90": percentile(items, 90),
                    "fanin_slice": ms(f["fanin_slice"]["seconds"])[0],
                    "fanin_len": ms(f["fanin_len"]["seconds"])[0]})
    short = dag_id.removeprefix("xcom_bench_")
    if got.get("wall_s") is not None:
        out[f"dag_{short}_wall_s"] = got["wall_s"]
    if got.get("run_s") is not None:
        out[f"dag_{short}_run_s"] = got["run_s"]
    return out


# -- xcombus processes ------------------------------------------------------------------------
def create_topic(cfg: Config) -> None:
    done = subprocess.run([sys.executable, "-m", "xcombus", "topic", "create"], env=cfg.xcombus_env(),
                          cwd=cfg.work, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        _fail(f"xcombus topic create ({cfg.name})", done)


def start_materializer(cfg: Config, log_path: Path) -> subprocess.Popen[bytes]:
    assert cfg.settings is not None
    with log_path.open("ab") as sink:
        proc = subprocess.Popen(MATERIALIZER_CMD,
                                env=cfg.xcombus_env(), cwd=cfg.work, stdout=sink,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    view = Path(cfg.settings.view_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the materializer exited {proc.returncode}: {log_path.read_text()[-3000:]}")
        if view.exists():
            try:
                with sqlite3.connect(f"file:{view}?mode=ro", uri=True) as conn:
                    conn.execute("SELECT 1 FROM offsets LIMIT 1").fetchall()
                return proc
            except sqlite3.Error:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"the materializer did not open {view} within 60 s")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# -- profiles ------------------------------------------------------------------------------
def profile_summary(path: Path, ops: int, kind: str, package: Path = REPO / "xcombus") -> dict[str, Any]:
    """Where ``ops`` pushes, pulls or lazy-sequence items spent their time (cProfile of the
    task's thread; Airflow's execution API answers on another thread, so its work shows as
    the round trip's wait). ``package``: where the measured xcombus package lives."""
    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]

    def cum(pred: Any) -> float:
        found = [v[3] for k, v in raw.items() if pred(k)]
        return max(found) if found else 0.0

    per = 1e3 / ops
    round_trip = cum(lambda k: k[0].endswith("execution_time/supervisor.py") and k[2] == "send")
    backend = cum(lambda k: k[2] == ("serialize_value" if kind == "push" else "deserialize_value"))
    summary: dict[str, Any] = {
        "ops": ops, "total_s": total, "per_op_ms": total * per,
        "round_trip_ms": round_trip * per, "round_trip_share": round_trip / total if total else 0.0,
        "backend_ms": backend * per, "backend_share": backend / total if total else 0.0,
        "top_tottime": [{"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1],
                         "per_op_ms": v[2] * per}
                        for k, v in sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:8]],
    }
    prefix = str(package) + os.sep
    own = [(k, v) for k, v in raw.items() if k[0].startswith(prefix)]
    if own:  # xcombus's share, function by function (cumulative, per operation)
        summary["xcombus_cum"] = [
            {"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1], "cum_per_op_ms": v[3] * per}
            for k, v in sorted(own, key=lambda kv: kv[1][3], reverse=True)[:12]]
        # Waiting for the runtime's event loop thread (a publish's acknowledgement, a fetch).
        summary["xcombus_wait_ms"] = cum(
            lambda k: k[0] == prefix + "airflow.py" and k[2] == "_call") * per
    return summary


# -- targets -------------------------------------------------------------------------------
def targets(medians: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The issue's targets, per xcombus configuration, each judged twice: paired in one task
    (``xcom_bench_ab``: xcombus alternating with Airflow's default class, or with common-io's
    object-storage class, in the same process at the same moment; the median of the pairs'
    differences or ratios) and side by side (separate DAG runs per configuration, medians over
    the repeats: the machine's drift between runs included)."""
    rows: list[dict[str, Any]] = []
    base = medians.get("default", {})
    obj = medians.get("objstore", {})
    for x in XCOMBUS:
        m = medians.get(x, {})
        for op in ("push", "pull"):
            if f"ab_{op}_backend_diff" in m:
                diff = m[f"ab_{op}_backend_diff"]
                rows.append({"id": f"{x}:{op}_small_paired", "config": x, "how": "paired in one task",
                             "label": f"{op} of a 1 KB value: xcombus minus Airflow's default",
                             "value": diff, "unit": "ms", "op": "<=", "target": 2.0, "met": diff <= 2.0,
                             "xcombus": m[f"ab_{op}_backend"], "other": m[f"ab_{op}_default"]})
            fid = f"{op}_1k_p50"
            if fid in m and fid in base:
                diff = m[fid] - base[fid]
                rows.append({"id": f"{x}:{op}_small", "config": x, "how": "side by side",
                             "label": f"{op} of a 1 KB value: xcombus minus Airflow's default",
                             "value": diff, "unit": "ms", "op": "<=", "target": 2.0, "met": diff <= 2.0,
                             "xcombus": m[fid], "other": base[fid]})
        for n in SIZES[1:]:
            for op in ("push", "pull"):
                if f"ab_{op}_{n}_ratio" in m:
                    ratio = m[f"ab_{op}_{n}_ratio"]
                    rows.append({"id": f"{x}:{op}_{n}_paired", "config": x, "how": "paired in one task",
                                 "label": f"{op} of a {SIZE_LABEL[n]} value: xcombus / common-io "
                                          "object storage",
                                 "value": ratio, "unit": "x", "op": "<=", "target": 1.0,
                                 "met": ratio <= 1.0, "xcombus": m[f"ab_{op}_{n}_backend"],
                                 "other": m[f"ab_{op}_{n}_objstore"]})
                fid = f"{op}_{n}"
                if fid in m and fid in obj:
                    ratio = m[fid] / obj[fid]
                    rows.append({"id": f"{x}:{op}_{n}", "config": x, "how": "side by side",
                                 "label": f"{op} of a {SIZE_LABEL[n]} value: xcombus / common-io "
                                          "object storage",
                                 "value": ratio, "unit": "x", "op": "<=", "target": 1.0,
                                 "met": ratio <= 1.0, "xcombus": m[fid], "other": obj[fid]})
    return rows


# -- main ----------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true",
                   help="1 repeat, 50 small values, a fan-out of 100, fewer large values; "
                        "writes benchmarks/results/quick/airflow.json")
    p.add_argument("--repeats", type=int, help="interleaved repeats (default 3; --quick 1)")
    p.add_argument("--small", type=int, help="1 KB values pushed then pulled one by one (default 200)")
    p.add_argument("--fanout", type=int, help="mapped instances of the fan-in DAG (default 1000)")
    p.add_argument("--size-reps", help="values per size, 'bytes:count,...' "
                                       "(default 1024:10,1048576:5,10485760:3)")
    p.add_argument("--fanin-dag-repeats", type=int, default=1,
                   help="repeats that run the fan-in DAG whole; later ones re-run its reducer "
                        "(default 1)")
    p.add_argument("--no-profile", action="store_true", help="skip the profiled runs at the end")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help="comma-separated subset of " + ", ".join(CONFIGS))
    p.add_argument("--json", type=Path, help="results (default benchmarks/results/airflow.json)")
    p.add_argument("--broker-port", type=int, default=PORT,
                   help=f"port of the local broker when one is started (default {PORT})")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, profiles)")
    p.add_argument("--live-code", action="store_true",
                   help="measure the checkout's working tree as it is at each moment instead of a "
                        "snapshot of xcombus/ at HEAD")
    args = p.parse_args(argv)
    q = args.quick
    args.repeats = args.repeats or (1 if q else 3)
    args.small = args.small or (50 if q else 200)
    args.fanout = args.fanout or (100 if q else 1000)
    args.size_reps = args.size_reps or ("1024:3,1048576:2,10485760:1" if q
                                        else "1024:10,1048576:5,10485760:3")
    args.json = args.json or REPO / "benchmarks" / "results" / ("quick/airflow.json" if q
                                                                 else "airflow.json")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configurations: {', '.join(sorted(unknown))}")
    if min(args.repeats, args.small, args.fanout, args.fanin_dag_repeats) < 1:
        p.error("counts and repeats must be positive")
    return args


def snapshot(work: Path) -> tuple[Path, str]:
    """A copy of ``xcombus/`` as committed at HEAD, and a description of it.

    Other people edit and commit this checkout while a run lasts (20 minutes), and every
    Airflow process imports the editable install afresh: measuring the working tree would
    mix versions between repeats. The Airflow processes and the xcombus CLI get this copy
    first on ``PYTHONPATH`` instead."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True,
                              timeout=60).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "xcombus")
    code = work / "code"
    code.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD", "xcombus"], cwd=REPO, check=True,
                             capture_output=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True, timeout=60)
    note = " (uncommitted changes to xcombus/ in the checkout were not measured)" if dirty else ""
    return code, f"{commit}{note}"


def _live_code_version() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                                capture_output=True, text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "xcombus"],
                               cwd=REPO, check=True, capture_output=True, text=True,
                               timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (f"the working tree at {commit}" + (" + uncommitted changes to xcombus/" if dirty else "")
            + " (--live-code: edits during the run were measured too)")


def check_code(cfg: Config) -> None:
    """The Airflow processes import the snapshot, not the checkout."""
    done = cfg.af.python_run("import xcombus.airflow as m; print(m.__file__)", env=cfg.env, timeout=120)
    where = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or cfg.code is None or not where.startswith(str(cfg.code)):
        raise RuntimeError(f"Airflow imports xcombus from {where or '?'}, not from the snapshot "
                           f"{cfg.code}:\n{done.stderr[-2000:]}")


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "benchmarks.bench_airflow",
                          *(sys.argv[1:] if argv is None else argv)])
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="xcombus-bench-airflow-"))
    external = os.environ.get("XCOMBUS_BOOTSTRAP_SERVERS", "").strip()
    broker = None
    materializer: subprocess.Popen[bytes] | None = None
    sizes_env = {"XCOMBUS_BENCH_SMALL_N": str(args.small), "XCOMBUS_BENCH_FANOUT": str(args.fanout),
                 "XCOMBUS_BENCH_SIZE_REPS": args.size_reps}
    values: dict[str, dict[str, list[float]]] = {c: {} for c in args.configs}
    counts: dict[str, dict[str, dict[str, int]]] = {c: {} for c in args.configs}
    profiles: dict[str, Any] = {}
    meta: dict[str, Any] = {"command": command, "load_before": _load(),
                            "airflow": AIRFLOW_VERSION, "repeats": args.repeats, "small": args.small,
                            "fanout": args.fanout, "size_reps": args.size_reps,
                            "fanin_dag_repeats": min(args.fanin_dag_repeats, args.repeats),
                            "ab_n": max(1, args.small // 2), "threshold": THRESHOLD, "gauge_ms": []}
    timeout = 600 + args.fanout * 1.0
    try:
        if args.live_code:
            code, meta["code"] = None, _live_code_version()
        else:
            code, meta["code"] = snapshot(work)
        log(f"measuring xcombus {meta['code']}")
        log(f"Airflow {AIRFLOW_VERSION}: preparing its environment and a migrated metadata DB ...")
        template = airflow_env(AIRFLOW_VERSION, work / "template")
        venv = ensure_venv(AIRFLOW_VERSION)
        meta["broker"] = (f"external ({external}, XCOMBUS_BOOTSTRAP_SERVERS)" if external else
                          f"started by the benchmark on port {args.broker_port}")
        if external:
            bootstrap = external
        else:
            from xcombus.broker import LocalBroker

            broker = LocalBroker(home=work / "broker", port=args.broker_port)
            log(f"starting a local Kafka broker on port {broker.port} ...")
            broker.start()
            bootstrap = broker.bootstrap_servers
        configs: dict[str, Config] = {}
        for name in args.configs:
            home = work / f"home-{name}"
            home.mkdir()
            shutil.copy(template.db, home / "airflow.db")
            configs[name] = cfg = Config(name, AirflowEnv(AIRFLOW_VERSION, venv, home), work, bootstrap,
                                         sizes_env, code)
            if name in XCOMBUS:
                if code is not None:
                    check_code(cfg)
                create_topic(cfg)
        if "xcombus_view" in configs:
            materializer = start_materializer(configs["xcombus_view"], work / "materializer.log")
        log(f"ready in {time.perf_counter() - started:.0f}s; configurations: {', '.join(configs)}")

        names = list(configs)
        for repeat in range(args.repeats):
            gauge = machine_gauge()
            meta["gauge_ms"].append(gauge)
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            log(f"repeat {repeat + 1}/{args.repeats} (machine gauge {gauge:.0f} ms; "
                f"order {', '.join(order)})")
            for dag_id in DAG_IDS:
                for name in order:
                    cfg = configs[name]
                    t0 = time.perf_counter()
                    if dag_id == "xcom_bench_fanin" and repeat >= args.fanin_dag_repeats:
                        got = run_reducer(cfg, timeout)
                        what = "reducer"
                    else:
                        got = run_dag(cfg, dag_id, timeout)
                        what = dag_id
                    figs = figures_of(dag_id, got)
                    for k, v in figs.items():
                        values[name].setdefault(k, []).append(v)
                    if got.get("counts"):
                        counts[name][f"{dag_id}#{repeat + 1}"] = got["counts"]
                    shown = ", ".join(f"{k} {fmt(v)}" for k, v in figs.items()
                                      if not k.endswith(("_mean", "_first", "items")))
                    log(f"  {what} / {name}: {shown} ({time.perf_counter() - t0:.0f}s)")
        if not args.no_profile:
            log("profiles (untimed second passes under cProfile)")
            for name in names:
                cfg = configs[name]
                t0 = time.perf_counter()
                run_dag(cfg, "xcom_bench_small", timeout, profile=True)
                run_reducer(cfg, timeout, profile=True)
                prof = cfg.profile_env["XCOMBUS_BENCH_PROFILE"]
                package = (code or REPO) / "xcombus"
                profiles[name] = {kind: profile_summary(Path(f"{prof}.{kind}"), ops, kind, package)
                                  for kind, ops in (("push", args.small), ("pull", args.small),
                                                    ("fanin", args.fanout))}
                shown = "; ".join(f"{kind} {p['per_op_ms']:.2f} ms/op (round trip {p['round_trip_ms']:.2f}, "
                                  f"backend {p['backend_ms']:.2f})" for kind, p in profiles[name].items())
                log(f"  {name}: {shown} ({time.perf_counter() - t0:.0f}s)")
    finally:
        stop(materializer)
        if broker is not None:
            broker.stop()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    medians = {c: {k: median(v) for k, v in vs.items()} for c, vs in values.items()}
    result = {
        "meta": {**meta, "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "load_after": _load(),
                 "minutes": (time.perf_counter() - started) / 60},
        "configs": {c: {"label": CONFIGS[c][0], "backend": CONFIGS[c][1]} for c in args.configs},
        "values": values, "medians": medians, "targets": targets(medians),
        "xcombus_counts": {c: v for c, v in counts.items() if v}, "profile": profiles,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print()
    for t in result["targets"]:
        print(f"{'met ' if t['met'] else 'MISS'}  {t['config']}, {t['how']}: {t['label']}: "
              f"{t['value']:.3g} {t['unit']} (target {t['op']} {t['target']:g}; "
              f"xcombus {fmt(t['xcombus'])} ms, other {fmt(t['other'])} ms)")
    print(f"\nwrote {args.json} ({result['meta']['minutes']:.1f} min)")
    return result


if __name__ == "__main__":
    main()
