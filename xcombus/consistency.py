"""Read-your-writes without a shared database (invariant 6 of docs/architecture.md).

A strong pull computes the partitions of the task instances it reads
(:func:`partitions_of_pull`), asks the broker for their end offsets (:class:`EndOffsets`)
and waits until the view has applied them (:class:`ReadYourWrites`). With ``acks=all`` the
broker acknowledges a push only once it is below the high watermark, so end offsets read
*after* a push returned cover it: the pull sees every push that finished before it began.

Where the view's offsets come from is a :class:`ViewProgress`: the view file itself, polled
(:class:`ViewPoller`, any process), or the in-process materializer, which wakes waiters
when it commits (:class:`MaterializerProgress`). The wait is bounded; its timeout error
names each lagging partition with its applied and end offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .connection import kafka_options, started
from .errors import ViewNotReadyError, XComBrokerError, XComTimeoutError
from .events import TaskInstanceKey, partition_for
from .settings import Settings

if TYPE_CHECKING:  # annotations only: a pushing process never loads the view or the consumer loop
    from .materialize import Materializer
    from .view import ViewReader

__all__ = ["EndOffsets", "MaterializerProgress", "ReadYourWrites", "ViewPoller", "ViewProgress",
           "partitions_of_pull"]

#: The poller's back-off between reads of the view's offsets (seconds): short first, since
#: a materializer usually commits within milliseconds.
_POLL_MIN, _POLL_MAX = 0.0005, 0.02
#: The in-process materializer wakes waiters on every commit; a waiter still looks again
#: this often, so a materializer that died (and never commits again) is noticed.
_EVENT_RECHECK = 0.1


class ViewProgress(Protocol):
    """Where a read-your-writes wait learns how far the view got."""

    def offsets(self) -> Mapping[int, int]:
        """partition -> next offset the view has applied (empty: nothing yet)."""
        ...

    async def wait_progress(self, timeout: float) -> None:
        """Return once the offsets may have moved, after ``timeout`` seconds at most; raise
        if they never will (the in-process materializer stopped)."""
        ...


class ViewPoller:
    """The view file as a :class:`ViewProgress`: reads its ``offsets`` table, polling with
    back-off. One poller per wait (the back-off starts short for each pull)."""

    def __init__(self, open_view: Callable[[], ViewReader]) -> None:
        #: Opens (or returns the already open) reader; raises ViewNotReadyError without a file.
        self._open_view = open_view
        self._delay = _POLL_MIN

    def offsets(self) -> Mapping[int, int]:
        """The view's applied offsets; empty while a materializer is still creating the file."""
        try:
            return self._open_view().offsets()
        except ViewNotReadyError:
            # The materializer has not created the view (or its tables) yet: keep waiting.
            # Not a check of the path beforehand: the file may appear between the two.
            return {}

    async def wait_progress(self, timeout: float) -> None:
        """Sleep until the next poll (never longer than ``timeout``)."""
        await asyncio.sleep(min(self._delay, timeout))
        self._delay = min(self._delay * 2, _POLL_MAX)


class MaterializerProgress:
    """The in-process materializer as a :class:`ViewProgress`: woken by its commits."""

    def __init__(self, materializer: Materializer) -> None:
        self._materializer = materializer

    def offsets(self) -> Mapping[int, int]:
        """What the materializer has committed to the view."""
        return self._materializer.visible

    async def wait_progress(self, timeout: float) -> None:
        """Wait for the next commit; raise XComViewError if the materializer stopped (it
        checks on every call, so a short wait notices a death soon)."""
        await self._materializer.wait_progress(min(timeout, _EVENT_RECHECK))


def partitions_of_pull(partitions: int, dag_id: str, run_id: str, task_ids: Iterable[str],
                       map_indexes: Sequence[int] | None, *, include_prior_dates: bool) -> Collection[int]:
    """The partitions a pull must wait for: those of the task instances it reads, or all of
    them when it reads every map index or falls back to earlier runs (rows may sit anywhere)."""
    if map_indexes is None or include_prior_dates:
        return range(partitions)
    return {partition_for(TaskInstanceKey(dag_id, run_id, t, i).encode(), partitions)
            for t in task_ids for i in map_indexes}


class ReadYourWrites:
    """The read-your-writes wait of one process: end offsets from the broker, progress from
    the view. ``progress`` gives the :class:`ViewProgress` of one wait."""

    def __init__(self, settings: Settings, progress: Callable[[], ViewProgress]) -> None:
        self._settings = settings
        self._progress = progress
        self._end_offsets = EndOffsets(settings)

    async def wait_visible(self, partitions: Iterable[int], *, timeout: float | None = None) -> None:
        """Wait until the view holds every event acknowledged on these partitions so far.

        Raises XComTimeoutError naming the partitions that lag.
        """
        timeout = self._settings.pull_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):  # the broker round trip counts too
                targets = await self._end_offsets.get(sorted(set(partitions)), timeout)
        except TimeoutError:
            raise XComTimeoutError(f"Kafka did not report end offsets within {timeout:g}s") from None
        targets = {p: o for p, o in targets.items() if o > 0}
        progress = self._progress()
        while True:
            # (A view past these end offsets is normal: the log grew since they were read.
            # A view ahead of a re-created topic is caught by the materializer instead.)
            applied = progress.offsets()
            lagging = {p: (applied.get(p, 0), end) for p, end in targets.items()
                       if applied.get(p, 0) < end}
            if not lagging:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = ", ".join(f"partition {p} at {a} of {e}" for p, (a, e) in sorted(lagging.items()))
                raise XComTimeoutError(
                    f"the view at {self._settings.view_path} did not catch up within "
                    f"{timeout:g}s ({detail}): is the materializer running (xcombus "
                    "materialize)? Pass consistency='eventual' to read without waiting")
            await progress.wait_progress(remaining)

    async def aclose(self) -> None:
        """Disconnect from the broker. Safe to call twice."""
        await self._end_offsets.aclose()


class EndOffsets:
    """Partitions' end offsets from the broker: the bound a read-your-writes pull waits for.

    A group-less consumer used only for ListOffsets requests; started on first use.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is not None:
            return self._consumer
        async with self._lock:
            if self._consumer is None:
                s = self._settings
                consumer = AIOKafkaConsumer(
                    **kafka_options(s),
                    client_id=f"{s.client_id}-offsets",
                    group_id=None,
                    enable_auto_commit=False,
                    isolation_level="read_committed",
                    request_timeout_ms=int(s.connect_timeout * 1000),
                )
                async with started(consumer, s, "to learn end offsets",
                                   hint="Use consistency='eventual' to read without the broker."):
                    pass
                self._consumer = consumer
        return self._consumer

    async def get(self, partitions: Iterable[int], timeout: float) -> dict[int, int]:
        """partition -> end offset (the offset the next record will get)."""
        consumer = await self._client()
        topic = self._settings.topic
        tps = [TopicPartition(topic, p) for p in partitions]
        try:
            async with asyncio.timeout(timeout):
                ends = await consumer.end_offsets(tps)
        except TimeoutError:
            raise XComTimeoutError(
                f"Kafka did not report end offsets of {topic!r} partitions "
                f"{sorted(tp.partition for tp in tps)} within {timeout:.3g}s") from None
        except KafkaError as exc:
            raise XComBrokerError(f"reading end offsets of {topic!r} failed: {exc!r}") from exc
        return {tp.partition: off for tp, off in ends.items()}

    async def aclose(self) -> None:
        """Disconnect. Safe to call twice."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), self._settings.connect_timeout)
