"""The batching publisher: many concurrent pushes, few broker requests.

aiokafka's per-message ``send`` tops out near 28k messages/s on a 2-core machine while its
batch API reaches ~350k/s, so pushes are not sent one by one. Each partition has a *lane*:
``publish`` appends ``(key, value, future)`` to the lane and wakes it; the lane takes
everything pending, packs it into as few ``BatchBuilder``s as fit, and hands them to
aiokafka's accumulator. aiokafka keeps one batch per partition in flight, so while one is
on the wire the next fills up: batching adapts to load with no linger delay.

The producer is idempotent (``acks=all``): a push's future resolves only when the broker
has replicated the record, which is what makes read-your-writes by high watermark sound.
"""

from __future__ import annotations

import asyncio
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

from .connection import kafka_options
from .errors import (
    XComBrokerError,
    XComClosedError,
    XComPublishError,
    XComTimeoutError,
    XComValueTooLargeError,
)
from .records import Receipt
from .settings import Settings

__all__ = ["Publisher"]

log = logging.getLogger(__name__)

# Kafka's default max.message.bytes is 1,048,588 for a whole record batch.
_MAX_BATCH_BYTES = 1_040_000
# Errors after which an idempotent aiokafka producer never recovers (aiokafka #1017):
# the only cure is a new producer, i.e. a new producer id.
_FATAL_PRODUCER_ERRORS = (
    OutOfOrderSequenceNumber, UnknownProducerId, ProducerFenced, InvalidProducerEpoch)

_Item = tuple[bytes, bytes, "asyncio.Future[Receipt]"]


class _Lane:
    __slots__ = ("born", "items", "task", "wake")

    def __init__(self) -> None:
        self.items: list[_Item] = []
        #: Loop time at which the oldest pending item arrived; its push_timeout runs from here.
        self.born = 0.0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class Publisher:
    """Publishes encoded events to the topic in coalesced, acknowledged batches.

    Use as ``async with Publisher(settings) as pub: receipt = await pub.publish(...)``.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.topic
        self._producer: AIOKafkaProducer | None = None
        self._lanes: dict[int, _Lane] = {}
        self._closed = False
        self._reset_lock = asyncio.Lock()
        self.partitions = 0

    def _new_producer(self) -> AIOKafkaProducer:
        s = self._settings
        return AIOKafkaProducer(
            **kafka_options(s),
            client_id=s.client_id,
            enable_idempotence=True,  # implies acks=all
            max_batch_size=_MAX_BATCH_BYTES,
            max_request_size=_MAX_BATCH_BYTES + 8192,
            request_timeout_ms=int(s.push_timeout * 1000),
            linger_ms=0,
        )

    async def _start_producer(self) -> AIOKafkaProducer:
        s = self._settings
        producer = self._new_producer()
        try:
            async with asyncio.timeout(s.connect_timeout):
                await producer.start()
                partitions = await producer.partitions_for(self._topic)
        except (TimeoutError, KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise XComBrokerError(
                f"cannot connect a producer to Kafka at {s.bootstrap_servers} within "
                f"{s.connect_timeout:g}s ({type(exc).__name__}: {exc}); start a broker "
                "(xcombus broker start) or set XCOMBUS_BOOTSTRAP_SERVERS"
            ) from exc
        if not partitions:
            await producer.stop()
            raise XComBrokerError(f"topic {self._topic!r} has no partitions")
        self.partitions = len(partitions)
        return producer

    async def start(self) -> None:
        """Connect; raise XComBrokerError within ``connect_timeout`` if Kafka is unreachable."""
        if self._closed:
            raise XComClosedError("this Publisher was closed; create a new one")
        if self._producer is None:
            self._producer = await self._start_producer()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def publish(self, partition: int, key: bytes, value: bytes) -> Receipt:
        """Send one record; return its receipt once the broker acknowledged it.

        Raises XComTimeoutError when no acknowledgement came within ``push_timeout``.
        The deadline is enforced per batch by the lane, not per push: one timer per
        batch instead of one per push is a large share of the hot path's cost.
        """
        if self._closed or self._producer is None:
            raise XComClosedError("the publisher is closed (or not started)")
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(partition)
        if lane is None:
            lane = self._lanes[partition] = _Lane()
            lane.task = loop.create_task(self._run_lane(partition, lane))
        fut: asyncio.Future[Receipt] = loop.create_future()
        if not lane.items:
            lane.born = loop.time()
            lane.wake.set()
        lane.items.append((key, value, fut))
        return await fut

    async def _run_lane(self, partition: int, lane: _Lane) -> None:
        while True:
            if not lane.items:
                if self._closed:
                    return
                lane.wake.clear()
                await lane.wake.wait()
                continue
            items, lane.items = lane.items, []
            deadline = lane.born + self._settings.push_timeout
            try:
                await self._send(partition, items, deadline)
            except asyncio.CancelledError:
                _fail(items, XComClosedError("the publisher was closed before this push was sent"))
                raise
            except Exception as exc:  # never let a lane die: fail its pushes instead
                log.exception("sending to partition %d failed", partition)
                _fail(items, XComPublishError(f"push to partition {partition} failed: {exc}"))

    def _timeout_error(self, partition: int) -> XComTimeoutError:
        return XComTimeoutError(
            f"the broker at {self._settings.bootstrap_servers} did not acknowledge a push to "
            f"partition {partition} within {self._settings.push_timeout:g}s (push_timeout); "
            "the event may or may not have been written: retry the push (the latest value wins)"
        )

    async def _send(self, partition: int, items: list[_Item], deadline: float) -> None:
        loop = asyncio.get_running_loop()
        i, n = 0, len(items)
        while i < n:
            producer = self._producer
            assert producer is not None
            batch = producer.create_batch()
            start = i
            while i < n and batch.append(key=items[i][0], value=items[i][1], timestamp=None) is not None:
                i += 1
            if i == start:  # one record larger than a whole batch
                _fail(items[i:i + 1], XComValueTooLargeError(
                    f"an event of {len(items[i][1])} bytes does not fit in a Kafka record "
                    f"batch ({_MAX_BATCH_BYTES} bytes); lower the value size"))
                i += 1
                continue
            chunk = items[start:i]
            try:
                async with asyncio.timeout_at(deadline):
                    delivery = await producer.send_batch(batch, self._topic, partition=partition)
            except TimeoutError:
                _fail(items[start:], self._timeout_error(partition))
                return
            except KafkaError as exc:
                _fail(items[start:], XComPublishError(
                    f"push to partition {partition} was not sent: {exc!r}"))
                await self._maybe_reset(exc)
                return
            # aiokafka's idempotent producer retries forever; our deadline bounds the wait.
            expiry = loop.call_at(deadline, _fail, chunk, self._timeout_error(partition))
            delivery.add_done_callback(partial(self._settle, partition, chunk, expiry))

    def _settle(self, partition: int, chunk: list[_Item], expiry: asyncio.TimerHandle,
                delivery: asyncio.Future[Any]) -> None:
        expiry.cancel()
        if delivery.cancelled():
            _fail(chunk, XComPublishError("the batch was cancelled before the broker acknowledged it"))
            return
        exc = delivery.exception()
        if exc is not None:
            _fail(chunk, XComPublishError(
                f"the broker refused a batch for partition {partition}: {exc!r}"))
            if isinstance(exc, _FATAL_PRODUCER_ERRORS):
                asyncio.get_running_loop().create_task(self._maybe_reset(exc))
            return
        base = delivery.result().offset
        topic = self._topic
        for idx, (_, _, fut) in enumerate(chunk):
            if not fut.done():
                fut.set_result(Receipt(topic, partition, base + idx))

    async def _maybe_reset(self, exc: BaseException) -> None:
        """Replace the producer after an error aiokafka's idempotent producer cannot survive."""
        if not isinstance(exc, _FATAL_PRODUCER_ERRORS) or self._closed:
            return
        old = self._producer
        async with self._reset_lock:
            if self._producer is not old or self._closed:
                return  # somebody else already replaced it
            log.warning("replacing the Kafka producer after a fatal error: %r", exc)
            try:
                self._producer = await self._start_producer()
            except XComBrokerError:
                log.exception("could not replace the producer; pushes keep failing until it can")
                return
            if old is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(old.stop(), self._settings.connect_timeout)

    async def aclose(self) -> None:
        """Deliver what is pending (bounded by ``push_timeout``), then disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for lane in self._lanes.values():
            lane.wake.set()  # lanes hand over what they hold, then return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.push_timeout
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._settings.push_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                # stop() flushes the accumulator, so handed-over batches still get acked.
                await asyncio.wait_for(producer.stop(), max(1.0, deadline - loop.time()))
            except (TimeoutError, KafkaError) as exc:
                raise XComBrokerError(f"closing the producer did not finish cleanly: {exc}") from exc


def _fail(items: list[_Item], exc: BaseException) -> None:
    for _, _, fut in items:
        if not fut.done():
            fut.set_exception(exc)
