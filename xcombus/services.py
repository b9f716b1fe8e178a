"""The long-running xcombus processes: the materializer and the topic tail.

Each is one coroutine that runs until SIGTERM/SIGINT (through
:func:`xcombus.process.run_until_stopped`). ``xcombus materialize`` and ``xcombus tail`` call
them directly, and so do the checkout's scripts ``python -m consumers.materializer`` and
``python -m consumers.audit tail``.

- :func:`materialize_until_stopped`: fold the topic into the view; on a stop signal the
  materializer finishes the batch in hand, commits it and returns.
- :func:`tail_until_stopped`: print each event of the topic as one JSON line (pushes with
  their value's light form, clears, events that are not valid). It reads the topic, never
  the view.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from .process import freeze_startup_objects, run_until_stopped
from .settings import Settings

if TYPE_CHECKING:
    from .audit import AuditEvent

__all__ = ["materialize_until_stopped", "render_event", "tail_until_stopped"]

log = logging.getLogger("xcombus.materializer")

_encode = msgspec.json.Encoder(enc_hook=repr).encode


async def materialize_until_stopped(settings: Settings) -> None:
    """Run one materializer (with its Prometheus metrics when ``settings.metrics_port`` is
    set) until a stop signal; it then commits the batch in hand and returns."""
    from .materialize import Materializer

    metrics = None
    if settings.metrics_port:
        from .metrics import MaterializerMetrics

        metrics = MaterializerMetrics()
        metrics.serve(settings.metrics_port)
        log.info("Prometheus metrics on port %d", settings.metrics_port)
    materializer = Materializer(settings, metrics=metrics)
    await materializer.start()
    freeze_startup_objects()
    log.info("materializing topic %r into %s (group %s)", settings.topic,
             materializer.view_path, settings.effective_group_id)
    try:
        await run_until_stopped(materializer.run(), stop=materializer.stop)
    finally:
        await materializer.aclose()
        log.info("stopped after %d events (%d dead letters); offsets %s",
                 materializer.events_applied, materializer.dead_letters,
                 dict(sorted(materializer.visible.items())))


def render_event(event: AuditEvent) -> str:
    """One audit event as a JSON line (values msgspec cannot encode are shown by repr)."""
    return _encode(event).decode()


async def tail_until_stopped(settings: Settings, *, limit: int | None = None, from_beginning: bool = False,
                             dag_id: str | None = None, run_id: str | None = None,
                             task_id: str | None = None, key: str | None = None) -> int:
    """Print matching events as JSON lines until stopped (or ``limit`` were printed);
    return how many were printed."""
    from .audit import tail

    printed = 0

    async def follow() -> None:
        nonlocal printed
        async for event in tail(settings, dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                from_beginning=from_beginning):
            print(render_event(event), flush=True)
            printed += 1
            if limit is not None and printed >= limit:
                return

    await run_until_stopped(follow())
    return printed
