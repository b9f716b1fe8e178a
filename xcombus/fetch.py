"""Read single events from the topic by position: the pull path of hosts without a view.

A reference (:mod:`xcombus.reference`) says exactly where an XCom version lives, so a
host that keeps no view (an ephemeral worker, a Kubernetes pod) reads that one record
instead of folding the topic. One consumer (no group, nothing committed) is reused for
every fetch of the process; records that come back in the same fetch response are kept in
a small cache, because a fan-in reads many neighbouring offsets one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError, OffsetOutOfRangeError

from .connection import kafka_options, started
from .errors import XComBrokerError, XComNotFoundError, XComTimeoutError
from .settings import Settings

__all__ = ["NEIGHBOURS", "ONE_BATCH", "EventFetcher", "RawRecord"]

#: How much of a partition one fetch brings back by default: the record asked for first, and
#: its neighbours, which a fan-in reads next.
NEIGHBOURS = 1024 * 1024
#: For reads of scattered positions (history, per-try reads): the broker still answers with
#: the whole record batch holding the offset, and nothing after it is decompressed and parsed
#: for nothing (with NEIGHBOURS, a history of 13 versions on a 1M-event topic took seconds).
ONE_BATCH = 1

#: Records kept from earlier fetch responses (count, and bytes of values).
_CACHE_RECORDS = 4096
_CACHE_BYTES = 16 * 1024 * 1024


class RawRecord(NamedTuple):
    """One record as read from the topic: its message key and value, undecoded."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class EventFetcher:
    """Fetches records by ``(partition, offset)``; an async context manager.

    ``fetch_bytes``: how much of a partition one fetch reads (:data:`NEIGHBOURS` for reads of
    neighbouring positions, :data:`ONE_BATCH` for scattered ones).

    Every fetch is bounded by ``pull_timeout``; a record that retention removed raises
    XComNotFoundError naming the position.
    """

    def __init__(self, settings: Settings, *, fetch_bytes: int = NEIGHBOURS) -> None:
        self._settings = settings
        self._fetch_bytes = fetch_bytes
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[tuple[int, int], RawRecord] = OrderedDict()
        self._cache_bytes = 0

    async def __aenter__(self) -> EventFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            s = self._settings
            consumer = AIOKafkaConsumer(
                **kafka_options(s), client_id=f"{s.client_id}-fetch", group_id=None,
                enable_auto_commit=False, auto_offset_reset="none",
                request_timeout_ms=int(max(s.connect_timeout, s.pull_timeout) * 1000),
                # The record asked for comes first; a little more serves the neighbours.
                max_partition_fetch_bytes=self._fetch_bytes, fetch_max_wait_ms=100)
            async with started(consumer, s, f"to read an XCom from topic {s.topic!r}",
                               hint="Or keep a view on this host (XCOMBUS_VIEW_PATH, kept by "
                                    "xcombus materialize)."):
                pass
            self._consumer = consumer
        return self._consumer

    async def fetch(self, partition: int, offset: int) -> RawRecord:
        """The record at ``offset`` of ``partition``."""
        cached = self._cache.get((partition, offset))
        if cached is not None:
            self._cache.move_to_end((partition, offset))
            return cached
        async with self._lock:  # one consumer: fetches of one process take turns
            return await self._fetch(partition, offset)

    async def end_offset(self, partition: int) -> int:
        """The offset the partition's next event will take (its end now)."""
        async with self._lock:
            return await self._end(await self._client(), TopicPartition(self._settings.topic, partition))

    async def _end(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
        s = self._settings
        try:
            async with asyncio.timeout(s.connect_timeout):
                return int((await consumer.end_offsets([tp]))[tp])
        except TimeoutError:
            raise XComTimeoutError(f"Kafka did not give the end of {s.topic!r} partition {tp.partition} "
                                   f"within {s.connect_timeout:g}s (connect_timeout)") from None
        except KafkaError as exc:
            raise XComBrokerError(f"reading the end of {s.topic!r} partition {tp.partition} failed: "
                                  f"{exc!r}") from exc

    async def _fetch(self, partition: int, offset: int) -> RawRecord:
        s = self._settings
        consumer = await self._client()
        tp = TopicPartition(s.topic, partition)
        if tp not in consumer.assignment():
            consumer.assign([*consumer.assignment(), tp])
        for other in consumer.assignment():
            if other != tp:
                consumer.pause(other)
        consumer.resume(tp)
        consumer.seek(tp, offset)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.pull_timeout
        checked_end = past_end = False
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise await self._missing(consumer, tp, offset, timed_out=True)
                try:
                    data = await consumer.getmany(tp, timeout_ms=int(min(remaining, 1.0) * 1000))
                except OffsetOutOfRangeError:
                    raise await self._missing(consumer, tp, offset, timed_out=False) from None
                found = None
                for rec in data.get(tp, ()):
                    raw = RawRecord(partition, rec.offset, rec.key, rec.value)
                    if rec.offset >= offset:
                        self._remember(raw)  # a mapped fan-out reads the same record many times
                        if rec.offset == offset:
                            found = raw
                if found is not None:
                    return found
                if data.get(tp):  # only later offsets: the asked one is a gap (a control record)
                    raise await self._missing(consumer, tp, offset, timed_out=False)
                if not checked_end:  # nothing yet: an offset past the end would wait the whole bound
                    checked_end = True
                    with contextlib.suppress(XComTimeoutError):  # then the pull_timeout bound decides
                        past_end = offset >= await self._end(consumer, tp)
                    if past_end:
                        raise await self._missing(consumer, tp, offset, timed_out=False)
        except BaseException as exc:
            # A position that could not be read (a bad partition among them) must not stay
            # assigned, or the consumer would keep asking about it.
            with contextlib.suppress(Exception):
                consumer.assign([t for t in consumer.assignment() if t != tp])
            if isinstance(exc, KafkaError):
                raise XComBrokerError(
                    f"reading {s.topic!r} partition {partition} offset {offset} failed: {exc!r}") from exc
            raise
        finally:
            if tp in consumer.assignment():
                consumer.pause(tp)

    async def _missing(self, consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, *,
                       timed_out: bool) -> Exception:
        """The error that explains why ``offset`` could not be read."""
        where = f"{tp.topic} partition {tp.partition} offset {offset}"
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                first = (await consumer.beginning_offsets([tp]))[tp]
                end = (await consumer.end_offsets([tp]))[tp]
        except (TimeoutError, KafkaError) as exc:
            return XComBrokerError(f"cannot read {where}: Kafka did not say which offsets it "
                                   f"holds ({exc!r})")
        if offset < first:
            return XComNotFoundError(
                f"the event at {where} is gone: the topic now starts at offset {first} "
                "(retention removed older events; XCOMBUS_RETENTION_MS / the topic's retention.ms)")
        if offset >= end:
            return XComNotFoundError(
                f"the event at {where} does not exist: the partition ends at offset {end}. Was "
                "the topic deleted and re-created, or is XCOMBUS_TOPIC / BOOTSTRAP_SERVERS wrong?")
        if timed_out:
            return XComTimeoutError(f"Kafka did not return {where} within "
                                    f"{self._settings.pull_timeout:g}s (pull_timeout)")
        return XComNotFoundError(f"there is no event at {where} (a transaction marker?)")

    def _remember(self, raw: RawRecord) -> None:
        key = (raw.partition, raw.offset)
        if key in self._cache:
            return
        self._cache[key] = raw
        self._cache_bytes += len(raw.value or b"")
        while len(self._cache) > _CACHE_RECORDS or self._cache_bytes > _CACHE_BYTES:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= len(old.value or b"")

    async def aclose(self) -> None:
        """Disconnect. Safe to call twice."""
        consumer, self._consumer = self._consumer, None
        self._cache.clear()
        self._cache_bytes = 0
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self._settings.connect_timeout)
