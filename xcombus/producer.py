"""The batching publisher: many concurrent pushes, few broker requests.

aiokafka's per-message ``send`` tops out near 28k messages/s on a 2-core machine while its
batch API reaches ~350k/s, so pushes are not sent one by one. Each partition has a *lane*:
``publish`` appends ``(key, value, future)`` to the lane and wakes it; the lane takes
everything pending, packs it into as few ``BatchBuilder``s as fit, and hands them to
aiokafka's accumulator. aiokafka keeps one batch per partition in flight and one queued
behind it; the lane hands over the next only once the batch before the last is answered,
so while one is on the wire the next fills up in the lane and leaves as late as it can:
batching adapts to load with no linger delay.

The producer is idempotent (``acks=all``): a push's future resolves only when the broker
has replicated the record, which is what makes read-your-writes by high watermark sound.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

from .connection import kafka_options, started
from .errors import (
    XComBrokerError,
    XComClosedError,
    XComConfigError,
    XComPublishError,
    XComTimeoutError,
    XComValueTooLargeError,
)
from .limits import MAX_BATCH_BYTES, MAX_RECORD_BYTES
from .records import Receipt
from .settings import Settings

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

# Errors after which an idempotent aiokafka producer never recovers (aiokafka #1017):
# the only cure is a new producer, i.e. a new producer id.
_FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber, UnknownProducerId, ProducerFenced, InvalidProducerEpoch)

_Futures = list["asyncio.Future[Receipt]"]

#: Builds a Receipt without NamedTuple's Python-level ``__new__`` (one frame per push
#: saved; the result is the same Receipt). Only for fields already known to be right.
_receipt = tuple.__new__


class _Lane:
    # Pending records as three parallel lists, not one (key, value, future) tuple per push:
    # a tuple holding a future is one more object the garbage collector walks for every
    # push in flight (its young-generation passes are a visible share of a push's CPU).
    __slots__ = ("futures", "handed", "keys", "newest", "task", "values", "wake")

    def __init__(self) -> None:
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.futures: _Futures = []
        #: Loop time at which the newest pending item arrived: the pending list expires
        #: push_timeout after it, so no push ever fails before its own push_timeout.
        self.newest = 0.0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        #: The last two batches handed to aiokafka, oldest first, as (delivery, deadline of
        #: its pushes); an entry leaves once answered, or when the lane stops waiting for it.
        self.handed: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()


class Publisher:
    """Publishes encoded events to the topic in coalesced, acknowledged batches.

    Use as ``async with Publisher(settings) as pub: receipt = await pub.publish(...)``.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic
        self._producer: AIOKafkaProducer | None = None
        #: The loop the producer runs on (set by start): submit() is called once per push.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lanes: dict[int, _Lane] = {}
        self._closed = False
        self._reset_lock = asyncio.Lock()
        self._resets: set[asyncio.Task[None]] = set()

    def _new_producer(self) -> AIOKafkaProducer:
        s = self._settings
        try:
            return self._make_producer(s)
        except RuntimeError as exc:
            if "Compression library" not in str(exc):  # aiokafka: "... for zstd not found"
                raise
            raise XComConfigError(
                f"XCOMBUS_COMPRESSION={s.compression} cannot be used here ({exc}): install "
                f"'aiokafka[{s.compression}]' (cramjam), or set XCOMBUS_COMPRESSION=none") from exc

    @staticmethod
    def _make_producer(s: Settings) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **kafka_options(s),
            client_id=s.client_id,
            enable_idempotence=True,  # implies acks=all
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_BATCH_BYTES + 8192,
            request_timeout_ms=int(s.push_timeout * 1000),
            linger_ms=0,
            compression_type=None if s.compression == "none" else s.compression,
        )

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = self._new_producer()
        async with started(producer, self._settings, "to connect a producer"):
            if not await producer.partitions_for(self._topic):
                raise XComBrokerError(f"topic {self._topic!r} has no partitions")
        return producer

    async def start(self) -> None:
        """Connect; raise XComBrokerError within ``connect_timeout`` if Kafka is unreachable."""
        if self._closed:
            raise XComClosedError("this Publisher was closed; create a new one")
        if self._producer is None:
            self._loop = asyncio.get_running_loop()
            self._producer = await self._start_producer()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def publish(self, partition: int, key: bytes, value: bytes) -> Receipt:
        """Send one record; return its receipt once the broker acknowledged it.

        Raises XComTimeoutError when no acknowledgement came within ``push_timeout``
        (enforced per batch by the lane: one timer per batch, not per push, is a large
        share of the hot path's cost).
        """
        return await self.submit(partition, key, value)

    def submit(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[Receipt]:
        """Queue one record; the returned future resolves as :meth:`publish` returns.

        A plain function, so a caller on the push path awaits the future itself instead
        of one more coroutine (each layer of coroutines is paid again on every push).
        Must be called on the event loop the publisher was started on.
        """
        loop = self._loop
        if self._closed or self._producer is None or loop is None:
            raise XComClosedError("the publisher is closed (or not started)")
        if len(key) + len(value) > MAX_RECORD_BYTES:
            raise XComValueTooLargeError(
                f"an event of {len(key) + len(value)} bytes does not fit in a Kafka record batch "
                f"({MAX_RECORD_BYTES} bytes at most); nothing was sent")
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _Lane()
            lane.task = loop.create_task(self._run_lane(partition, lane))
        fut: asyncio.Future[Receipt] = loop.create_future()
        futures = lane.futures
        if not futures:
            lane.wake.set()
        lane.newest = loop.time()
        lane.keys.append(key)
        lane.values.append(value)
        futures.append(fut)
        return fut

    async def _run_lane(self, partition: int, lane: _Lane) -> None:
        try:
            while True:
                if not lane.futures:
                    if self._closed:
                        return
                    lane.wake.clear()
                    await lane.wake.wait()
                    continue
                await self._wait_for_room(lane)
                keys, values, futures = lane.keys, lane.values, lane.futures
                lane.keys, lane.values, lane.futures = [], [], []
                deadline = lane.newest + self._settings.push_timeout
                try:
                    last = await self._send(partition, keys, values, futures, deadline)
                    if last is not None:
                        lane.handed.append((last, deadline))
                except Exception as exc:  # _send answers its pushes itself; a lane must not die
                    log.exception("the lane of partition %d failed", partition)
                    _fail(futures, XComPublishError(
                        f"push to partition {partition} failed: {exc!r}; the event may or may "
                        "not have been written: push again if it matters"))
        finally:
            # Whatever is still queued when the lane ends (closed, cancelled) gets an answer.
            _fail(lane.futures, XComClosedError("the publisher was closed before this push was sent"))
            lane.keys, lane.values, lane.futures = [], [], []

    async def _wait_for_room(self, lane: _Lane) -> None:
        """Return once at most one batch of the lane is with aiokafka unanswered.

        aiokafka sends one batch per partition at a time and queues the next one, closed,
        behind it. A third batch built before the first is answered would be closed too, so
        the pushes arriving meanwhile would miss it and wait one more round trip (under
        load, the tail of push latency). So the pending pushes stay in the lane until the
        batch before the last is answered, then go out together as the next batch. An
        unanswered batch holds the lane for a tenth of push_timeout at most; after that the
        pushes queue in aiokafka, as they would anyway.
        """
        handed = lane.handed
        while handed and (len(handed) > 1 or handed[0][0].done()):
            delivery, deadline = handed.popleft()
            if not delivery.done():
                loop = asyncio.get_running_loop()
                await asyncio.wait({delivery}, timeout=min(deadline - loop.time(),
                                                           self._settings.push_timeout / 10))

    def _timeout_error(self, partition: int) -> XComTimeoutError:
        return XComTimeoutError(
            f"the broker at {self._settings.bootstrap_servers} did not acknowledge a push to "
            f"partition {partition} within {self._settings.push_timeout:g}s (push_timeout); "
            "the event may or may not have been written: push again if it matters"
        )

    async def _send(self, partition: int, keys: list[bytes], values: list[bytes],
                    futures: _Futures, deadline: float) -> asyncio.Future[Any] | None:
        """Hand the records to aiokafka in as few batches as fit; answer every future;
        return the delivery of the last batch handed over (None if none was).

        Raises only CancelledError: once a chunk is handed over, only its delivery (or its
        deadline) may answer it, since failing it here could report a push as lost that the
        broker then writes; so a failure answers the chunks not handed over yet and returns.
        """
        loop = asyncio.get_running_loop()
        i, n = 0, len(futures)
        last: asyncio.Future[Any] | None = None
        while i < n:
            start = i  # futures[:start] are handed over: their deliveries answer them
            try:
                producer = self._producer
                if producer is None:
                    raise XComClosedError("the publisher was closed before this push was sent")
                if loop.time() >= deadline:
                    raise TimeoutError  # expired while queued: answer it, do not hand it over
                batch = producer.create_batch()
                append = batch.append
                # aiokafka accepts any first record; submit() already refused oversized ones.
                while i < n:
                    if append(key=keys[i], value=values[i], timestamp=None) is None:
                        break  # the batch is full: the rest go in the next one
                    i += 1
                async with asyncio.timeout_at(deadline):
                    delivery = await producer.send_batch(batch, self._topic, partition=partition)
                # aiokafka's idempotent producer retries forever; our deadline bounds the wait.
                chunk = futures[start:i]
                expiry = loop.call_at(deadline, _fail, chunk, self._timeout_error(partition))
                delivery.add_done_callback(partial(self._settle, partition, chunk, expiry, producer))
                last = delivery
            except asyncio.CancelledError:  # closing: handed chunks stay with their deliveries
                _fail(futures[start:], XComClosedError(
                    "the publisher was closed before this push was sent"))
                raise
            except TimeoutError:
                _fail(futures[start:], self._timeout_error(partition))
                return last
            except KafkaError as exc:
                _fail(futures[start:], XComPublishError(
                    f"push to partition {partition} was not sent: {exc!r}"))
                self._schedule_reset(producer, exc)
                return last
            except XComClosedError as exc:
                _fail(futures[start:], exc)
                return last
            except Exception as exc:  # a bug of ours or aiokafka's: fail loudly, not silently
                log.exception("sending to partition %d failed", partition)
                _fail(futures[start:], XComPublishError(f"push to partition {partition} failed: {exc!r}"))
                return last
        return last

    def _settle(self, partition: int, chunk: _Futures, expiry: asyncio.TimerHandle,
                producer: AIOKafkaProducer, delivery: asyncio.Future[Any]) -> None:
        expiry.cancel()
        if delivery.cancelled():
            _fail(chunk, XComPublishError("the batch was cancelled before the broker acknowledged it"))
            return
        exc = delivery.exception()
        if exc is not None:
            _fail(chunk, XComPublishError(
                f"the broker refused a batch for partition {partition}: {exc!r}"))
            self._schedule_reset(producer, exc)
            return
        base = delivery.result().offset
        topic = self._topic
        for idx, fut in enumerate(chunk):
            if not fut.done():
                # A retried batch the broker had already written may come back without its
                # offset (-1): the push is durable, its position unknown.
                fut.set_result(_receipt(Receipt, (topic, partition, base + idx if base >= 0 else -1)))

    def _schedule_reset(self, failed: AIOKafkaProducer, exc: BaseException) -> None:
        if isinstance(exc, _FATAL_PRODUCER_ERRORS) and not self._closed:
            task = asyncio.get_running_loop().create_task(self._reset(failed, exc))
            self._resets.add(task)
            task.add_done_callback(self._resets.discard)

    async def _reset(self, failed: AIOKafkaProducer, exc: BaseException) -> None:
        """Replace a producer that hit an error aiokafka's idempotent producer cannot survive."""
        stale: AIOKafkaProducer = failed
        async with self._reset_lock:
            if self._producer is not failed or self._closed:
                return  # already replaced (a late error of an old producer), or closing
            log.warning("replacing the Kafka producer after a fatal error: %r", exc)
            try:
                fresh = await self._start_producer()
            except XComBrokerError:
                log.exception("could not replace the producer; pushes fail until it can")
                return
            if self.closed:  # closed while the fresh producer connected
                await fresh.stop()
                return
            self._producer = fresh
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stale.stop(), self._settings.connect_timeout)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Deliver what is pending (bounded by ``push_timeout``), then disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.push_timeout
        for task in list(self._resets):
            task.cancel()
        await asyncio.gather(*self._resets, return_exceptions=True)
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for lane in self._lanes.values():
            lane.wake.set()  # lanes hand over what they hold, then return
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._settings.push_timeout)
            for task in late:
                task.cancel()  # the lane's finally answers every push it still holds
            await asyncio.gather(*late, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                # stop() flushes the accumulator, so handed-over batches still get acked.
                await asyncio.wait_for(producer.stop(), max(1.0, deadline - loop.time()))
            except (TimeoutError, KafkaError) as exc:
                raise XComBrokerError(f"closing the producer did not finish cleanly: {exc}") from exc


def _fail(futures: _Futures, exc: BaseException) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)
