"""The server's one XComBus: writes of ``/api/v2`` as override events, and per-try reads.

A write never touches SQLite: it publishes an override (``XComBus.set_xcom`` /
``delete_xcom``, actor = the token's principal) and returns once the view has applied it,
so the response and the next GET show it. The bus starts on the first write (a read-only
server never connects a producer) and closes when the app shuts down.

Writes of this server run one at a time (an asyncio lock): a create checks that the XCom
does not exist and publishes under the same lock, so two creates of one XCom through this
server never both succeed. Another writer (a task, ``xcombus set``, another server) can
still race a create; the log records both, and the later one wins in the view.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ..bus import XComBus
from ..events import TaskInstanceKey
from ..records import Receipt, XComRecord
from ..settings import Settings

__all__ = ["ApiWriter"]


class ApiWriter:
    """Overrides through one lazily started XComBus, each awaited until the view shows it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bus: XComBus | None = None
        self._lock = asyncio.Lock()
        self._starting = asyncio.Lock()

    async def bus(self) -> XComBus:
        """The started bus (started on first use; an existing topic is required)."""
        async with self._starting:
            if self._bus is None:
                bus = XComBus(self.settings, create_topic=False)
                await bus.start()
                self._bus = bus
            return self._bus

    @asynccontextmanager
    async def exclusive(self, ti: TaskInstanceKey) -> AsyncIterator[XComBus]:
        """Hold this server's write lock, with the view caught up on ``ti``'s partition, so
        that checks made inside see every write acknowledged before."""
        bus = await self.bus()
        async with self._lock:
            await bus.wait_visible([bus.partition_of(ti)])
            yield bus

    async def set(self, bus: XComBus, ti: TaskInstanceKey, key: str, value: Any, *, reason: str,
                  actor: str) -> Receipt:
        """Publish an override setting ``key`` and wait until the view applied it."""
        receipt = await bus.set_xcom(ti, key, value, reason=reason, actor=actor)
        await bus.wait_visible([receipt.partition])
        return receipt

    async def delete(self, bus: XComBus, ti: TaskInstanceKey, key: str, *, reason: str,
                     actor: str) -> Receipt:
        """Publish an override deleting ``key`` and wait until the view applied it."""
        receipt = await bus.delete_xcom(ti, key, reason=reason, actor=actor)
        await bus.wait_visible([receipt.partition])
        return receipt

    async def read_try(self, ti: TaskInstanceKey, key: str, try_number: int) -> XComRecord | None:
        """What try ``try_number`` of ``ti`` last wrote under ``key`` (from the topic), or None."""
        bus = await self.bus()
        found = await bus.read(ti.dag_id, ti.run_id, [ti.task_id], key, map_indexes=[ti.map_index],
                               try_number=try_number)
        return found[0] if found else None

    async def close(self) -> None:
        """Close the bus (flushing nothing: every write was awaited). Safe to call twice."""
        if self._bus is not None:
            bus, self._bus = self._bus, None
            await bus.aclose()
