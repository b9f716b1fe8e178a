"""The materializer process: ``python -m consumers.materializer`` or ``xcombus materialize``.

Folds the XCom topic into the SQLite view until SIGTERM or SIGINT; then it finishes the
batch in hand, commits it and exits 0. Exit codes: 0 stopped cleanly, 1 failed (the
message says why), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import logging
import signal
import sys

from xcombus.errors import XComBusError, XComConfigError
from xcombus.materialize import Materializer
from xcombus.settings import Settings

log = logging.getLogger("xcombus.materializer")


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        buffer = io.StringIO()
        task.print_stack(limit=12, file=buffer)
        log.warning("task %s:\n%s", task.get_name(), buffer.getvalue())


async def run(settings: Settings) -> None:
    """Run one materializer until a stop signal arrives."""
    metrics = None
    if settings.metrics_port:
        from xcombus.metrics import MaterializerMetrics

        metrics = MaterializerMetrics()
        metrics.serve(settings.metrics_port)
        log.info("Prometheus metrics on port %d", settings.metrics_port)
    materializer = Materializer(settings, metrics=metrics)
    await materializer.start()
    # Folding allocates many short-lived objects; start-up objects never die. Freezing
    # them and collecting the young generation less often cut fold's time by a third
    # in a profile (docs/benchmarks.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, materializer.stop)
    # SIGUSR1: log what every task is waiting on (for "it stopped moving" reports).
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    log.info("materializing topic %r into %s (group %s)", settings.topic,
             materializer.view_path, settings.effective_group_id)
    try:
        await materializer.run()
    finally:
        await materializer.aclose()
        log.info("stopped after %d events (%d dead letters); offsets %s",
                 materializer.events_applied, materializer.dead_letters,
                 dict(sorted(materializer.visible.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumers.materializer",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--view", help="view file (default: XCOMBUS_VIEW_PATH or xcombus.db)")
    parser.add_argument("--topic", help="topic (default: XCOMBUS_TOPIC or xcombus.xcom)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(view_path=args.view, topic=args.topic)
        asyncio.run(run(settings))
    except XComConfigError as exc:
        print(f"xcombus materialize: {exc}", file=sys.stderr)
        return 2
    except XComBusError as exc:
        print(f"xcombus materialize: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
