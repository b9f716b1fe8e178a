"""The materializer: consume the topic, fold each fetched batch, write it with its offsets.

The loop is ``getmany → fold (xcombus.fold) → one transaction (xcombus.store)``. The
transaction runs in the writer process (:mod:`xcombus.writer`) while this process fetches
and folds the next batch: the *submitted* offsets advance when a batch is handed over (so
the next fold skips it), the *visible* ones, and everything that tells the world (the
progress event, metrics, the Kafka commit, purges), only once the writer acknowledged its
commit. On every assignment the consumer seeks to the offsets stored *in the view*, so the
view, not Kafka's committed offsets, decides where to resume; the Kafka commit that
follows each transaction exists for lag tooling only. A batch (or its part) below the
view's offsets is skipped, so a batch fetched before a rebalance is never applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .backends import BaseXCom, backend_purges, load_backend, purge_payloads
from .connection import kafka_options, started
from .errors import XComBrokerError, XComViewError
from .fold import LogMessage, fold
from .records import XComRecord
from .settings import Settings
from .store import ViewBatch, row_record
from .topic import ensure_topic
from .writer import ViewWriterProcess

if TYPE_CHECKING:  # only an annotation: importing this module must not load prometheus_client
    from .metrics import MaterializerMetrics

__all__ = ["Materializer"]

log = logging.getLogger(__name__)

_MAX_RECORDS = 20_000
_POLL_MS = 200
# The watchdog: after this long without progress while events wait, reconnect.
_STALL_AFTER = 15.0
_STALL_CHECK_EVERY = 5.0
_GETMANY_GRACE = 2.0


class _SeekToView(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    """On assignment, continue from the offsets stored in the view (not Kafka's)."""

    def __init__(self, materializer: Materializer) -> None:
        self._m = materializer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Nothing to flush: a batch in flight commits to this view whoever owns the
        # partition next (another member folds its own view, from its own offsets).
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        m = self._m
        consumer = m._consumer
        assert consumer is not None
        tps = list(assigned)
        # Batches may still be handed over while we wait below; compare what was submitted
        # *before* reading the log bounds (the log only grows, so this is never ahead of it
        # unless the topic was re-created).
        submitted_before = dict(m._submitted)
        try:
            async with asyncio.timeout(m._settings.connect_timeout):
                ends = await consumer.end_offsets(tps)
                starts = await consumer.beginning_offsets(tps)
        except (TimeoutError, KafkaError) as exc:
            log.warning("could not check the log bounds of %s: %r", tps, exc)
            ends = starts = {}
        ahead = {tp.partition: (submitted_before[tp.partition], ends[tp]) for tp in tps
                 if tp in ends and submitted_before.get(tp.partition, 0) > ends[tp]}
        if ahead:
            # The log is shorter than what the view applied: the topic was deleted and
            # re-created (or truncated). Going on would skip every new event.
            m._fail(XComViewError(
                f"the view at {m.view_path} is ahead of topic {m._settings.topic!r} "
                f"(partition: (view, log end) {ahead}): the topic was re-created or truncated; "
                "rebuild the view into a new file (xcombus rebuild) and use that"))
            return
        for tp in tps:
            offset = m._submitted.get(tp.partition, 0)
            if 0 < offset < starts.get(tp, 0):
                log.error("partition %d: events %d..%d were deleted by retention before this view "
                          "applied them; continuing from %d", tp.partition, offset, starts[tp] - 1,
                          starts[tp])
            consumer.seek(tp, offset)
        log.info("partitions assigned: %s", {tp.partition: m._submitted.get(tp.partition, 0) for tp in tps})


class Materializer:
    """Consumes the XCom topic in a consumer group and keeps the view up to date.

    ``await m.start()`` opens the view (taking its write lock) and joins the group;
    ``await m.run()`` loops until ``stop()``; ``await m.aclose()`` ends both. As an async
    context manager it runs the loop in a background task. :meth:`offsets` and
    :meth:`wait_progress` tell an in-process reader what the view shows.
    """

    def __init__(self, settings: Settings, *, backend: type[BaseXCom] | None = None,
                 metrics: MaterializerMetrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics
        self._backend = backend or load_backend(settings)
        self._writer = ViewWriterProcess(settings.view_path, topic=settings.topic)
        #: partition -> next offset, as handed to the writer (committed, or in flight): what
        #: fold and seek go by, so nothing is applied twice.
        self._submitted: dict[int, int] = {}
        #: partition -> next offset, once the batch committed and its purges are done (what
        #: waiters, metrics and the Kafka commit read).
        self._visible: dict[int, int] = {}
        self._events_applied = 0
        self._dead_letters = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_kafka_commit = 0.0
        self._kafka_commit: asyncio.Task[None] | None = None
        self._last_progress = self._last_check = 0.0
        self._fatal: Exception | None = None
        #: The last batch handed to the writer, until its commit is acknowledged and
        #: published (at most one in flight: memory holds two batches at most).
        self._committing: asyncio.Task[None] | None = None

    @property
    def visible(self) -> Mapping[int, int]:
        """partition -> next offset the view shows (committed, side effects done); read-only."""
        return types.MappingProxyType(self._visible)

    def offsets(self) -> dict[int, int]:
        """A copy of :attr:`visible`: what an in-process reader may rely on."""
        return dict(self._visible)

    @property
    def events_applied(self) -> int:
        """Events this materializer committed to the view (dead letters included)."""
        return self._events_applied

    @property
    def dead_letters(self) -> int:
        """Events this materializer dead-lettered."""
        return self._dead_letters

    @property
    def view_path(self) -> Path:
        """The view file this materializer writes."""
        return self._writer.path

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer, subscribed with the seek-to-view listener."""
        s = self._settings
        consumer = AIOKafkaConsumer(
            **kafka_options(s),
            client_id=f"{s.client_id}-materializer",
            group_id=s.effective_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=8 * 1024 * 1024,
        )
        async with started(consumer, s, "for the materializer"):
            pass
        consumer.subscribe([s.topic], listener=_SeekToView(self))
        return consumer

    async def start(self) -> None:
        """Open the view and join the consumer group; fail within connect_timeout."""
        s = self._settings
        await self._writer.open()
        try:
            self._submitted = await self._writer.offsets()
            self._visible = dict(self._submitted)
            await ensure_topic(s)
            self._consumer = await self._connect()
        except BaseException:
            await self.aclose()
            raise

    async def run(self) -> None:
        """Consume and apply batches until stop() is called; the batch in hand is finished."""
        if self._consumer is None:
            raise XComViewError("call start() before run()")
        self._last_progress = self._last_check = time.monotonic()
        while not self._stopping.is_set():
            if self._fatal is not None:
                raise self._fatal
            consumer = self._consumer
            getmany = asyncio.ensure_future(consumer.getmany(timeout_ms=_POLL_MS,
                                                             max_records=_MAX_RECORDS))
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            # getmany() can hang past its own timeout when the consumer lost the broker
            # (seen after broker restarts): bound it, and let the watchdog judge.
            await asyncio.wait({getmany, stop_wait}, timeout=_POLL_MS / 1000 + _GETMANY_GRACE,
                               return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not getmany.done():
                getmany.cancel()
                with contextlib.suppress(asyncio.CancelledError, KafkaError):
                    await getmany
                if self._stopping.is_set():
                    break  # stopping while no batch is in hand: nothing to finish
                if await self._stalled(consumer):
                    await self._reconnect()
                continue
            data = getmany.result()
            if self._fatal is not None:
                raise self._fatal
            if data:
                messages = {tp.partition: fetched for tp, fetched in data.items()}
                del data  # the fetched messages must not outlive their fold (memory)
                await self._fold_and_submit(messages)
                del messages
                self._last_progress = time.monotonic()
            elif await self._stalled(consumer):
                await self._reconnect()
            self._report_positions()
        await self._wait_published()  # the batch in hand is finished: committed and published
        if self._fatal is not None:
            raise self._fatal

    def _report_positions(self) -> None:
        """Metrics: committed offsets and lag per partition (only what the view shows)."""
        consumer = self._consumer
        if self._metrics is not None and consumer is not None:
            self._metrics.positions(self._visible, {tp.partition: consumer.highwater(tp)
                                                    for tp in consumer.assignment()})

    async def _stalled(self, consumer: AIOKafkaConsumer) -> bool:
        """A watchdog for a consumer that stays alive but stops consuming (aiokafka #1154:
        after a broker restart the group may never be rejoined): events wait on the
        partitions it owns, yet nothing arrived for a while."""
        now = time.monotonic()
        if now - self._last_check < _STALL_CHECK_EVERY or now - self._last_progress < _STALL_AFTER:
            return False
        self._last_check = now
        assigned = consumer.assignment()
        if not assigned:
            # Owning nothing is normal in a group with more members than partitions,
            # but not for long in the usual one-materializer-per-view setup.
            return now - self._last_progress > 4 * _STALL_AFTER
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                ends = await consumer.end_offsets(list(assigned))
        except (TimeoutError, KafkaError) as exc:
            # No progress for a while and not even a ListOffsets answer: this client is
            # broken (after a broker restart it may never recover); a fresh one is cheap.
            log.warning("watchdog: no progress for %.0fs and end offsets fail (%r); reconnecting "
                        "the consumer", now - self._last_progress, exc)
            return True
        behind = {tp.partition: end - self._submitted.get(tp.partition, 0) for tp, end in ends.items()
                  if end > self._submitted.get(tp.partition, 0)}
        if not behind:
            self._last_progress = now  # idle and caught up: all is well
            return False
        log.warning("watchdog: %d event(s) wait on partitions %s but nothing arrived for %.0fs; "
                    "reconnecting the consumer", sum(behind.values()), sorted(behind),
                    now - self._last_progress)
        return True

    async def _reconnect(self) -> None:
        old, self._consumer = self._consumer, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), self._settings.connect_timeout)
        while self._consumer is None and not self._stopping.is_set():
            try:
                self._consumer = await self._connect()
            except XComBrokerError as exc:
                log.warning("reconnecting the consumer failed (%s); retrying", exc)
                await asyncio.sleep(1)
        self._last_progress = time.monotonic()

    async def _fold_and_submit(self, messages: Mapping[int, Sequence[LogMessage]]) -> None:
        """Fold one fetched batch and hand it to the writer; returns once it is in flight.

        The commit is published (waiters, metrics, purges, Kafka) by a task that waits for
        the writer's acknowledgement; :meth:`_wait_published` waits for it.
        """
        started = time.perf_counter()
        batch = fold(messages, self._submitted, self._backend)
        if not batch.offsets:
            return
        collect_superseded = backend_purges(self._backend)
        # Encoded now, while the previous batch commits.
        encoded = self._writer.encode(batch, collect_replaced=collect_superseded)
        # With a purging backend, the values this batch stores: never purged with a replaced
        # row (a duplicate event carries the same reference).
        steps = batch.steps()
        keep = frozenset(row[5] for step in steps for row in step.upserts) if collect_superseded else None
        for step in steps:
            step.upserts = []  # encoded: free the rows while the previous batch commits
            step.versions = []
        # The previous batch first: it is published before this one is sent, so visible
        # offsets and purges follow log order, and a failed write stops us here.
        try:
            await self._wait_published()
            commit = await self._writer.submit(encoded)
        except XComViewError as exc:
            self._fail(exc)
            raise
        self._submitted.update(batch.offsets)  # at once: fold and seek must never re-apply
        self._committing = asyncio.ensure_future(self._publish(batch, commit, keep, started))

    async def _wait_published(self) -> None:
        """Wait until the batch in flight (if any) is committed and published; raise
        XComViewError if its write failed (the writer then refuses every later batch)."""
        committing = self._committing
        if committing is None:
            return
        try:
            # Shielded: a caller cancelled while it waits must not cancel the publication
            # (purges, visible offsets, the Kafka commit) of a batch the child commits anyway.
            await asyncio.shield(committing)
        finally:
            if committing.done() and self._committing is committing:
                self._committing = None

    async def _publish(self, batch: ViewBatch, commit: asyncio.Future[list[XComRecord]],
                       keep: frozenset[bytes] | None, started: float) -> None:
        """After the writer's acknowledgement: purge, then tell waiters and (lazily) Kafka."""
        try:
            replaced = await commit
        except XComViewError as exc:
            self._fail(exc)  # an idle loop learns it too: run() raises it
            raise
        self._events_applied += sum(batch.events.values())
        self._dead_letters += len(batch.dead)
        for dead in batch.dead:
            log.warning("dead-lettered partition %d offset %d: %s", dead.partition, dead.offset,
                        dead.reason)
        if keep is not None:  # a backend that purges: free what nothing refers to any more
            await purge_payloads(self._backend, [*replaced, *map(row_record, batch.superseded)], keep=keep)
        if self._metrics is not None:
            self._metrics.batch(time.perf_counter() - started, sum(batch.events.values()), len(batch.dead))
        # In-process waiters see the batch once its side effects (purges) are done too.
        self._visible.update(batch.offsets)
        self._report_positions()
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()
        await self._commit_to_kafka(force=False)

    async def _commit_to_kafka(self, *, force: bool) -> None:
        """Commit the view's offsets to Kafka, for lag tooling only, at most once a second.

        In the background: an unavailable group coordinator must never stall the view.
        """
        consumer = self._consumer
        now = time.monotonic()
        if consumer is None or (not force and now - self._last_kafka_commit < 1.0):
            return
        if self._kafka_commit is not None and not self._kafka_commit.done():
            if not force:
                return
            await asyncio.wait({self._kafka_commit}, timeout=5)
        self._last_kafka_commit = now
        topic = self._settings.topic
        assigned = {tp.partition for tp in consumer.assignment()}
        offsets = {TopicPartition(topic, p): o for p, o in self._visible.items() if p in assigned}
        if not offsets:
            return

        async def commit() -> None:
            try:
                await asyncio.wait_for(consumer.commit(offsets), 5)
            except (KafkaError, TimeoutError) as exc:
                log.info("Kafka offset commit skipped (only lag tooling reads it): %r", exc)

        self._kafka_commit = asyncio.get_running_loop().create_task(commit())
        if force:
            await self._kafka_commit

    async def wait_progress(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the next batch is visible in the view.

        Raises XComViewError at once if the background loop (``async with``) has died:
        the view will not move any more.
        """
        self._raise_if_failed()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout)

    def _raise_if_failed(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise XComViewError(f"the in-process materializer stopped: {task.exception()}") \
                from task.exception()

    def _fail(self, error: Exception) -> None:
        """Stop the loop with an error (run() raises it)."""
        self._fatal = error
        self._stopping.set()

    def stop(self) -> None:
        """Ask run() to return after the batch in hand."""
        self._stopping.set()

    async def __aenter__(self) -> Materializer:
        await self.start()
        self._task = asyncio.get_running_loop().create_task(self.run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the loop, commit offsets to Kafka, leave the group, close the view."""
        self.stop()
        task, self._task = self._task, None
        try:
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    if not task.cancelled():
                        raise  # we are being cancelled ourselves: still tear down (finally)
                except Exception:
                    log.exception("the materializer loop failed")
        finally:
            with contextlib.suppress(Exception):
                await self._wait_published()  # publish the batch in flight (or retrieve its error)
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._commit_to_kafka(force=True)
                consumer, self._consumer = self._consumer, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), self._settings.connect_timeout)
            await self._writer.aclose()
