"""The publisher's lanes against a scripted stand-in for aiokafka's producer (no broker):
every push is answered exactly once, by its own record's fate.

The integration tests run the same code on a real broker; these drive the failures a
broker rarely shows on demand (a refused batch, a batch that never comes back, a bug
between two batches, a close in the middle)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber

from xcombus.errors import XComBusError, XComClosedError, XComPublishError
from xcombus.producer import Publisher
from xcombus.records import Receipt
from xcombus.settings import Settings


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.capacity, self.records = capacity, []  # type: ignore[var-annotated]

    def append(self, key: bytes, value: bytes, timestamp: None) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class _Producer:
    """Batches of ``capacity()`` records; each send's fate is ``fate()``."""

    def __init__(self, capacity: Callable[[], int], fate: Callable[[], str]) -> None:
        self.capacity, self.fate = capacity, fate
        self.written: dict[int, tuple[bytes, bytes]] = {}  # offset -> record the broker holds
        self._next = 0

    def create_batch(self) -> _Batch:
        if self.fate() == "bug":
            raise RuntimeError("a bug between two batches")
        return _Batch(self.capacity())

    async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        fate = self.fate()
        if fate == "kafka_error":
            raise KafkaError("not sent")
        loop = asyncio.get_running_loop()
        delivery: asyncio.Future[Any] = loop.create_future()
        base, self._next = self._next, self._next + len(batch.records)

        def settle() -> None:
            if fate == "refused":
                delivery.set_exception(OutOfOrderSequenceNumber())
            elif fate == "cancelled":
                delivery.cancel()
            elif fate != "lost":  # "lost": never acknowledged, the deadline answers it
                self.written.update((base + i, rec) for i, rec in enumerate(batch.records))
                delivery.set_result(SimpleNamespace(offset=base))

        loop.call_later(random.random() * 0.005, settle)
        return delivery

    async def stop(self) -> None:
        pass


def _publisher(producer: _Producer, push_timeout: float = 0.3) -> Publisher:
    pub = Publisher(Settings(push_timeout=push_timeout))
    pub._loop = asyncio.get_running_loop()
    pub._producer = producer  # type: ignore[assignment]
    return pub


async def test_a_failure_between_batches_answers_only_what_was_not_handed_over() -> None:
    fates = iter(["ok", "ok", "bug"])  # first batch made and sent; the second one fails
    producer = _Producer(lambda: 2, lambda: next(fates, "ok"))
    pub = _publisher(producer)
    futures = [pub.submit(0, b"k", b"v%d" % i) for i in range(5)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    # The first two were handed to the producer and written: they must not be reported lost.
    assert results[:2] == [Receipt("xcombus.xcom", 0, 0), Receipt("xcombus.xcom", 0, 1)]
    assert all(isinstance(r, XComPublishError) and "a bug between two batches" in str(r)
               for r in results[2:])
    pub._closed = True
    pub._lanes[0].wake.set()
    await pub._lanes[0].task  # type: ignore[misc]


@pytest.mark.parametrize("seed", range(6))
async def test_every_push_is_answered_once_by_its_own_records_fate(seed: int) -> None:
    rng = random.Random(seed)
    fates = ["ok"] * 6 + ["refused", "cancelled", "lost", "kafka_error", "bug"]
    producer = _Producer(lambda: rng.randint(1, 7), lambda: rng.choice(fates))
    pub = _publisher(producer, push_timeout=0.2)
    pushes = []
    for i in range(400):
        partition, record = i % 3, (b"k%d" % (i % 7), b"v%d" % i)
        pushes.append((partition, record, pub.submit(partition, *record)))
        if rng.random() < 0.05:
            await asyncio.sleep(0)  # let the lanes take what is pending, mid-stream
    _, pending = await asyncio.wait([f for *_, f in pushes], timeout=2)
    assert not pending
    await asyncio.sleep(0.01)  # deliveries that were still to come (the fake's delay)
    written = set(producer.written.values())
    for partition, record, fut in pushes:
        exc = fut.exception()
        if exc is None:
            receipt = fut.result()
            assert receipt.partition == partition
            assert producer.written[receipt.offset] == record  # its own record, durable
        else:
            assert isinstance(exc, XComBusError)  # ours, with a message that says what happened
            assert record not in written  # never reported lost when the broker has it
    pub._closed = True
    for lane in pub._lanes.values():
        lane.wake.set()
    await asyncio.gather(*(lane.task for lane in pub._lanes.values()))  # type: ignore[misc]
    assert all(not lane.keys and not lane.values and not lane.futures for lane in pub._lanes.values())


async def test_a_lane_cancelled_mid_send_leaves_handed_batches_to_their_deliveries() -> None:
    blocked = asyncio.Event()

    class _Blocking(_Producer):
        sent = 0

        async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
            self.sent += 1
            if self.sent == 2:  # the second batch waits (a full accumulator) until cancelled
                blocked.set()
                await asyncio.Event().wait()
            return await super().send_batch(batch, topic, partition)

    producer = _Blocking(lambda: 2, lambda: "ok")
    pub = _publisher(producer)
    futures = [pub.submit(0, b"k", b"v%d" % i) for i in range(5)]
    await blocked.wait()
    lane_task = pub._lanes[0].task
    assert lane_task is not None
    lane_task.cancel()
    results = await asyncio.gather(*futures, return_exceptions=True)
    # The first batch was handed over and written: its pushes get their receipts.
    assert results[:2] == [Receipt("xcombus.xcom", 0, 0), Receipt("xcombus.xcom", 0, 1)]
    assert all(isinstance(r, XComClosedError) for r in results[2:])
    assert lane_task.cancelled()


async def test_a_lane_keeps_two_batches_with_the_producer_and_sends_the_rest_together() -> None:
    class _Manual(_Producer):
        """Deliveries answered by the test, in order."""

        def __init__(self) -> None:
            super().__init__(lambda: 100, lambda: "ok")
            self.batches: list[tuple[_Batch, asyncio.Future[Any]]] = []

        async def send_batch(self, batch: _Batch, topic: str, partition: int) -> asyncio.Future[Any]:
            delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.batches.append((batch, delivery))
            return delivery

        def answer(self, index: int) -> None:
            base = sum(len(b.records) for b, _ in self.batches[:index])
            self.batches[index][1].set_result(SimpleNamespace(offset=base))

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    producer = _Manual()
    pub = _publisher(producer)
    futures = [pub.submit(0, b"k", b"v0")]
    await settle()
    futures.append(pub.submit(0, b"k", b"v1"))
    await settle()
    assert [len(b.records) for b, _ in producer.batches] == [1, 1]  # one on the wire, one queued
    futures += [pub.submit(0, b"k", b"v%d" % i) for i in range(2, 5)]
    await settle()
    assert len(producer.batches) == 2  # the rest waits in the lane, not in a third closed batch
    producer.answer(0)
    await settle()
    assert [len(b.records) for b, _ in producer.batches] == [1, 1, 3]  # together, once there is room
    producer.answer(1)
    producer.answer(2)
    assert await asyncio.gather(*futures) == [Receipt("xcombus.xcom", 0, i) for i in range(5)]
    pub._closed = True
    pub._lanes[0].wake.set()
    await pub._lanes[0].task  # type: ignore[misc]
