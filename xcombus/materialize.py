"""Fold the topic into the SQLite view: consume, fold a batch, apply it with its offsets.

The loop is ``getmany → fold → one transaction (rows + dead letters + next offsets)``.
The transaction runs in a writer process (:mod:`xcombus.writer`) while this process
fetches and folds the next batch: ``applied`` advances when a batch is handed over (so the
next fold skips it), ``visible`` and everything that tells the world (the progress event,
metrics, the Kafka commit, purges) only once the writer acknowledged its commit.
On every assignment the consumer seeks to the offsets stored *in the view*, so the view,
not Kafka's committed offsets, decides where to resume; the Kafka commit that follows each
transaction exists for lag tooling only. A batch (or its part) below the view's offsets is
skipped, so a batch fetched before a rebalance is never applied twice.

Folding: within a batch the last push per XCom wins; a clear drops the task instance's
earlier pushes of the batch and deletes its stored rows. One task instance lives in one
partition and events are folded in log order, so the result equals applying every event
one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .backends import BaseXCom, load_backend
from .connection import kafka_options
from .errors import XComBrokerError, XComIdentifierError, XComViewError
from .events import Clear, EventDecodeError, decode_event, decode_ti_key, validate_key
from .metrics import MaterializerMetrics
from .records import XComRecord
from .settings import Settings
from .topic import ensure_topic
from .view import DeadLetter, ViewBatch, row_record
from .writer import ViewWriterProcess

__all__ = ["Materializer", "fold"]

log = logging.getLogger(__name__)

_MAX_RECORDS = 20_000
_POLL_MS = 200
# The watchdog: after this long without progress while events wait, reconnect.
_STALL_AFTER = 15.0
_STALL_CHECK_EVERY = 5.0
_GETMANY_GRACE = 2.0


def fold(
    records: Mapping[int, Sequence[Any]],
    applied: Mapping[int, int],
    backend: type[BaseXCom],
) -> ViewBatch:
    """Fold fetched records (partition -> ConsumerRecords in log order) into one ViewBatch.

    Records below ``applied[partition]`` were applied already and are skipped. Anything
    that is not a valid event of ours becomes a dead letter with the reason.
    """
    batch = ViewBatch()
    track = purges(backend)
    # task instance -> XCom key -> row: a clear drops its task instance's rows in one pop.
    by_ti: dict[tuple[str, str, str, int], dict[str, tuple[Any, ...]]] = {}
    runs: dict[tuple[str, str], int] = {}
    # The hot loop runs once per event (≈ 100,000 a second): a task instance's events
    # arrive together, so its decoded key and row dict are reused while the raw key repeats,
    # and XCom keys and codecs already checked in this batch are not checked again.
    last_raw: bytes | None = None
    ti: Any = None
    rows: dict[str, tuple[Any, ...]] | None = None
    valid_keys: set[str] = set()
    readable: set[str] = set()
    for partition, recs in records.items():
        floor = applied.get(partition, 0)
        count = 0
        for rec in recs:
            offset = rec.offset
            if offset < floor:
                continue
            count += 1
            try:
                raw = rec.key
                if raw != last_raw or raw is None:
                    last_raw = None  # until this key decoded
                    ti = decode_ti_key(raw)
                    rows = by_ti.get(ti)
                    last_raw = raw
                event = decode_event(rec.value)
                if type(event) is Clear:
                    gone = by_ti.pop(ti, None)
                    rows = None
                    if track and gone:
                        batch.superseded.extend(gone.values())
                    batch.clears.append((*ti, partition, offset))
                    continue
                key, codec = event.key, event.codec
                if key not in valid_keys:
                    try:
                        valid_keys.add(validate_key(key))
                    except XComIdentifierError as exc:
                        raise EventDecodeError(str(exc)) from None
                if codec not in readable:
                    if not backend.can_read(codec):
                        raise EventDecodeError(
                            f"codec {codec!r} cannot be read by the configured backend "
                            f"{backend.__module__}.{backend.__qualname__}")
                    readable.add(codec)
                try:
                    backend.check_stored(event.value, codec)
                except ValueError as exc:
                    raise EventDecodeError(f"{backend.__qualname__} refuses the value: {exc}") from None
            except EventDecodeError as exc:
                batch.dead.append(DeadLetter(partition, offset, rec.key, rec.value, str(exc),
                                             rec.timestamp))
                continue
            except Exception as exc:  # a bug of ours or a backend's: park the event, loudly
                log.exception("unexpected error decoding partition %d offset %d", partition, offset)
                batch.dead.append(DeadLetter(partition, offset, rec.key, rec.value,
                                             f"unexpected {type(exc).__name__}: {exc}", rec.timestamp))
                continue
            if rows is None:
                rows = by_ti[ti] = {}
            elif track and key in rows:
                batch.superseded.append(rows[key])
            logical_date = event.logical_date
            if logical_date is None:
                logical_date = ""  # NULL in the view: binds faster than None (view._UPSERT)
            else:
                runs[ti[:2]] = logical_date
            rows[key] = (*ti, key, event.value, codec, event.ts, logical_date,
                         event.producer, event.try_number, partition, offset)
        if recs:
            batch.offsets[partition] = max(floor, recs[-1].offset + 1)
            batch.events[partition] = count
    batch.upserts = [row for rows_of_ti in by_ti.values() for row in rows_of_ti.values()]
    batch.runs = [(dag_id, run_id, date) for (dag_id, run_id), date in runs.items()]
    return batch


def purges(backend: type[BaseXCom]) -> bool:
    """True when the backend overrides ``purge`` (so replaced rows must be collected)."""
    return backend.purge.__func__ is not BaseXCom.purge.__func__  # type: ignore[attr-defined]


async def purge_records(backend: type[BaseXCom], records: Sequence[XComRecord], *,
                        keep: Collection[bytes] = ()) -> None:
    """Remove the external payloads of records no row refers to any more.

    Call it only after the transaction that dropped them committed: a crash before the
    commit must not delete payloads still referenced. ``keep``: stored values of rows that
    stay (a duplicate of an event carries the same reference; its payload stays). A
    failure is logged, not raised: the view is already right, and an orphaned payload is
    only wasted space.
    """
    def run() -> None:
        for rec in records:
            if rec.value in keep:
                continue
            try:
                backend.purge(rec)
            except Exception:
                log.exception("purging the payload of %s/%s/%s[%d] %r failed", rec.dag_id,
                              rec.run_id, rec.task_id, rec.map_index, rec.key)

    if records and backend.does_io:
        await asyncio.to_thread(run)
    elif records:
        run()


class _SeekToView(ConsumerRebalanceListener):
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
        # Batches may still be applied while we wait below; compare what was applied
        # *before* reading the log bounds (the log only grows, so this is never ahead of it
        # unless the topic was re-created).
        applied_before = dict(m.applied)
        try:
            async with asyncio.timeout(m.settings.connect_timeout):
                ends = await consumer.end_offsets(tps)
                starts = await consumer.beginning_offsets(tps)
        except (TimeoutError, KafkaError) as exc:
            log.warning("could not check the log bounds of %s: %r", tps, exc)
            ends = starts = {}
        ahead = {tp.partition: (applied_before[tp.partition], ends[tp]) for tp in tps
                 if tp in ends and applied_before.get(tp.partition, 0) > ends[tp]}
        if ahead:
            # The log is shorter than what the view applied: the topic was deleted and
            # re-created (or truncated). Going on would skip every new event.
            m.fail(XComViewError(
                f"the view at {m.writer.path} is ahead of topic {m.settings.topic!r} "
                f"(partition: (view, log end) {ahead}): the topic was re-created or truncated; "
                "rebuild the view into a new file (xcombus rebuild) and use that"))
            return
        for tp in tps:
            offset = m.applied.get(tp.partition, 0)
            if 0 < offset < starts.get(tp, 0):
                log.error("partition %d: events %d..%d were deleted by retention before this view "
                          "applied them; continuing from %d", tp.partition, offset, starts[tp] - 1,
                          starts[tp])
            consumer.seek(tp, offset)
        log.info("partitions assigned: %s", {tp.partition: m.applied.get(tp.partition, 0) for tp in tps})


class Materializer:
    """Consumes the XCom topic in a consumer group and keeps the view up to date.

    ``await m.start()`` opens the view (taking its write lock) and joins the group;
    ``await m.run()`` loops until ``stop()``; ``await m.aclose()`` ends both. As an async
    context manager it runs the loop in a background task.
    """

    def __init__(self, settings: Settings, *, backend: type[BaseXCom] | None = None,
                 metrics: MaterializerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.backend = backend or load_backend(settings)
        self.writer = ViewWriterProcess(settings.view_path, topic=settings.topic)
        #: partition -> next offset, as handed to the writer (committed, or in flight): what
        #: fold and seek go by, so nothing is applied twice.
        self.applied: dict[int, int] = {}
        #: partition -> next offset, once the batch committed and its purges are done (what
        #: waiters, metrics and the Kafka commit read).
        self.visible: dict[int, int] = {}
        self.events_applied = 0
        self.dead_letters = 0
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

    async def _connect(self) -> AIOKafkaConsumer:
        """A started consumer, subscribed with the seek-to-view listener."""
        s = self.settings
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
        try:
            async with asyncio.timeout(s.connect_timeout):
                await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        consumer.subscribe([s.topic], listener=_SeekToView(self))
        return consumer

    async def start(self) -> None:
        """Open the view and join the consumer group; fail within connect_timeout."""
        s = self.settings
        await self.writer.open()
        try:
            self.applied = await self.writer.offsets()
            self.visible = dict(self.applied)
            await ensure_topic(s)
            self._consumer = await self._connect()
        except (TimeoutError, KafkaError, OSError) as exc:
            await self.aclose()
            raise XComBrokerError(
                f"the materializer cannot reach Kafka at {s.bootstrap_servers} within "
                f"{s.connect_timeout:g}s ({exc!r}): is the broker running?") from exc
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
                records = {tp.partition: recs for tp, recs in data.items()}
                del data  # the fetched records must not outlive their fold (memory)
                await self.apply(records)
                del records
                self._last_progress = time.monotonic()
            elif await self._stalled(consumer):
                await self._reconnect()
            self._report_positions()
        await self.settle()  # the batch in hand is finished: committed and published
        if self._fatal is not None:
            raise self._fatal

    def _report_positions(self) -> None:
        """Metrics: committed offsets and lag per partition (only what the view shows)."""
        consumer = self._consumer
        if self.metrics is not None and consumer is not None:
            self.metrics.positions(self.visible, {tp.partition: consumer.highwater(tp)
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
            async with asyncio.timeout(self.settings.connect_timeout):
                ends = await consumer.end_offsets(list(assigned))
        except (TimeoutError, KafkaError) as exc:
            # No progress for a while and not even a ListOffsets answer: this client is
            # broken (after a broker restart it may never recover); a fresh one is cheap.
            log.warning("watchdog: no progress for %.0fs and end offsets fail (%r); reconnecting "
                        "the consumer", now - self._last_progress, exc)
            return True
        behind = {tp.partition: end - self.applied.get(tp.partition, 0) for tp, end in ends.items()
                  if end > self.applied.get(tp.partition, 0)}
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
                await asyncio.wait_for(old.stop(), self.settings.connect_timeout)
        while self._consumer is None and not self._stopping.is_set():
            try:
                self._consumer = await self._connect()
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("reconnecting the consumer failed (%r); retrying", exc)
                await asyncio.sleep(1)
        self._last_progress = time.monotonic()

    async def apply(self, records: Mapping[int, Sequence[Any]]) -> None:
        """Fold one fetched batch and hand it to the writer; returns once it is in flight.

        The commit is published (waiters, metrics, purges, Kafka) by a task that waits for
        the writer's acknowledgement; call :meth:`settle` to wait for it.
        """
        started = time.perf_counter()
        batch = fold(records, self.applied, self.backend)
        if not batch.offsets:
            return
        track = purges(self.backend)
        prepared = self.writer.prepare(batch, collect_replaced=track)  # while the last one commits
        # With a purging backend, the values this batch stores: never purged with a replaced
        # row (a duplicate event carries the same reference).
        keep = frozenset(row[5] for row in batch.upserts) if track else None
        batch.upserts = []  # encoded: free the rows while the previous batch commits
        # The previous batch first: it is published before this one is sent, so visible
        # offsets and purges follow log order, and a failed write stops us here.
        try:
            await self.settle()
            commit = await self.writer.submit(prepared)
        except XComViewError as exc:
            self.fail(exc)
            raise
        self.applied.update(batch.offsets)  # at once: fold and seek must never re-apply
        self._committing = asyncio.ensure_future(self._publish(batch, commit, keep, started))

    async def settle(self) -> None:
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
            self.fail(exc)  # an idle loop learns it too: run() raises it
            raise
        self.events_applied += sum(batch.events.values())
        self.dead_letters += len(batch.dead)
        for dead in batch.dead:
            log.warning("dead-lettered partition %d offset %d: %s", dead.partition, dead.offset,
                        dead.reason)
        if keep is not None:  # a backend that purges: free what nothing refers to any more
            await purge_records(self.backend, [*replaced, *map(row_record, batch.superseded)], keep=keep)
        if self.metrics is not None:
            self.metrics.batch(time.perf_counter() - started, sum(batch.events.values()), len(batch.dead))
        # In-process waiters see the batch once its side effects (purges) are done too.
        self.visible.update(batch.offsets)
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
        topic = self.settings.topic
        assigned = {tp.partition for tp in consumer.assignment()}
        offsets = {TopicPartition(topic, p): o for p, o in self.visible.items() if p in assigned}
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
        """Wait (at most ``timeout`` s) until the next batch is committed to the view."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout)

    def raise_if_failed(self) -> None:
        """Raise XComViewError if the background loop (``async with``) has died."""
        task = self._task
        if task is not None and task.done() and not task.cancelled() and task.exception():
            raise XComViewError(f"the in-process materializer stopped: {task.exception()}") \
                from task.exception()

    def fail(self, error: Exception) -> None:
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

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The background loop started by ``async with`` (None otherwise)."""
        return self._task

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
                await self.settle()  # publish the batch in flight (or retrieve its error)
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    await self._commit_to_kafka(force=True)
                consumer, self._consumer = self._consumer, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), self.settings.connect_timeout)
            await self.writer.aclose()
