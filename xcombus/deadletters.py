"""Dead letters: inspect them, and re-apply them after the cause was fixed.

An event is dead-lettered when it could not be applied (undecodable bytes, a key that is
not a task instance, a schema version or codec this reader did not know...). After a fix —
an upgrade, the right ``XCOMBUS_XCOM_BACKEND`` — :func:`retry_dead_letters` decodes them
again and applies those that now pass, **without ever undoing something newer**: a push is
applied only if no later push of the same XCom and no later clear of its task instance is
in the view; a clear deletes only rows older than itself. What still fails stays, with
the new reason.
"""

from __future__ import annotations

import asyncio

import msgspec

from .backends import BaseXCom, backend_purges, load_backend, purge_payloads
from .fold import LogMessage, fold
from .settings import Settings
from .store import ViewStore

__all__ = ["RetrySummary", "retry_dead_letters"]


class RetrySummary(msgspec.Struct, frozen=True):
    """What a retry did."""

    applied: int
    #: Valid now, but something newer (a later push or clear) already decided the view.
    superseded: int
    still_failing: int


async def retry_dead_letters(settings: Settings, *, backend: type[BaseXCom] | None = None) -> RetrySummary:
    """Re-apply dead letters that now decode; needs the view's write lock (stop the materializer)."""
    backend = backend or load_backend(settings)
    collect = backend_purges(backend)
    # One transaction, run once: a worker thread serves it (the store is synchronous; there
    # is no next batch to fold meanwhile, so no writer process).
    store = await asyncio.to_thread(ViewStore.open, settings.view_path, topic=settings.topic)
    try:
        dead = await asyncio.to_thread(store.dead_letters)
        by_partition: dict[int, list[LogMessage]] = {}
        for letter in dead:  # a dead letter keeps what fold reads of its message
            by_partition.setdefault(letter.partition, []).append(letter)
        batch = fold(by_partition, {}, backend)
        retried = [(d.partition, d.offset) for d in dead]
        outcome = await asyncio.to_thread(store.retry, batch, retried, collect_unreferenced=collect)
    finally:
        await asyncio.to_thread(store.close)
    if collect:
        await purge_payloads(backend, outcome.unreferenced)
    # Valid now but not applied: a later push or clear (in the view, or among these dead
    # letters themselves) already decided the outcome.
    superseded = len(retried) - len(batch.dead) - outcome.applied
    return RetrySummary(outcome.applied, superseded, len(batch.dead))
