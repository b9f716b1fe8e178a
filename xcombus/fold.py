"""Fold log messages into one view batch (pure), deciding what the batch alone decides.

Within a batch the last push per XCom wins; a clear drops the task instance's earlier
pushes of the batch and deletes its stored rows. One task instance lives in one partition
and messages are folded in log order, so writing the folded batch equals applying every
event one by one. Anything that is not a valid event of ours becomes a dead letter with
the reason (invariant 7): a message is never misread, and the ones around it still apply.

Tries and versions (the rule is in :mod:`xcombus.store`): fold indexes the events that never
become a row of the view (clears, fenced events, pushes the batch itself supersedes; a row is
indexed when it leaves the view), fences a push or clear of an older try than one the batch
already saw for its task instance, and recognises a push that repeats its XCom's current row
of the batch (a re-send). What needs the view's stored state, the stored try of each task
instance and the stored rows, is left to :meth:`xcombus.store.ViewStore.write`: fold cuts
the batch into *steps* so that, per task instance, the pushes and clears of a step have
one try (the writer compares it with the stored one) and an override is a step by itself.
A log without retries or overrides folds into one step, as before.

The materializer, ``rebuild`` and the dead-letter retry all fold with :func:`fold`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .backends import BaseXCom, backend_purges
from .errors import XComIdentifierError
from .events import (
    Clear,
    EventDecodeError,
    Override,
    Push,
    TaskInstanceKey,
    decode_event,
    decode_ti_key,
    validate_key,
)
from .store import (
    KIND_CLEAR,
    KIND_PUSH,
    DeadLetter,
    Row,
    ViewBatch,
    content_hash,
    name_id,
    ti_ident,
    version_ident,
)

__all__ = ["LogMessage", "fold"]

log = logging.getLogger(__name__)


class LogMessage(Protocol):
    """What :func:`fold` reads of a message of the topic (an aiokafka ConsumerRecord, or a
    stored dead letter)."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | None: ...


#: A task instance's state in the batch, one list so that each event costs one dict lookup:
#: ``[position in its step's batch.tis, its try there (the highest of the batch so far),
#: cleared in the step, XCom key -> row (None: no row yet or cleared), the step's number]``;
#: stale (its try still counts) once another step began. A number, not the step: a state
#: referring to its step, which lists it, would be a reference cycle (see :func:`fold`).
_TIState: TypeAlias = list[Any]


class _Step:
    """The step being folded: its rows per task instance and what the writer must judge."""

    __slots__ = ("batch", "marks", "names", "repeated", "states")

    def __init__(self, batch: ViewBatch) -> None:
        self.batch = batch
        #: The states of the task instances with events in this step, in ``batch.tis`` order.
        self.states: list[_TIState] = []
        #: position in ``batch.tis`` -> offsets of the task instance's version rows in the
        #: step, set into its ``batch.tis`` row by close(). Only task instances that have some
        #: get a list: the other rows stay tuples of atoms, which the garbage collector stops
        #: tracking (a list in every row kept them all under its watch).
        self.marks: dict[int, list[int]] = {}
        #: ``(partition, offset)`` of the rows that are not their XCom's first write in the
        #: step (every other row is one, and is judged against the stored row).
        self.repeated: set[tuple[int, int]] = set()
        #: producer -> name_id
        self.names: dict[str, int] = {}

    def empty(self) -> bool:
        batch = self.batch
        return not (self.states or batch.clears or batch.versions or batch.held or batch.override)

    def name(self, producer: str) -> int:
        """The producer's name_id, remembered for the step's name table."""
        ident = self.names.get(producer)
        if ident is None:
            ident = self.names[producer] = name_id(producer)
        return ident

    def gone(self, row: Row, state: _TIState) -> None:
        """A row of the step was superseded or cleared within it, so it never reaches the
        view: index it here (a row that reaches the view is indexed when it leaves it, see
        store._TRIGGERS). If it was its XCom's first write, the writer must still tell whether
        it was a re-send of the stored row."""
        pos = state[0]
        self.batch.versions.append((version_ident(ti_ident(*row[:4]), row[4]), row[11], row[12], KIND_PUSH,
                                    row[10], row[7], self.name(row[9]), None, len(row[5]),
                                    content_hash(row[5]), 0))
        self.marks.setdefault(pos, []).append(row[12])
        if (row[11], row[12]) not in self.repeated:
            self.batch.probes.append((pos, row[4], row[11], row[12], row[9], row[10], row[6],
                                      content_hash(row[5])))

    def close(self) -> None:
        """Write the folded rows into the step's batch."""
        batch, repeated = self.batch, self.repeated
        batch.upserts = [row for state in self.states if state[3] for row in state[3].values()]
        for pos, offsets in self.marks.items():
            batch.tis[pos] = (*batch.tis[pos][:6], offsets)
        if repeated:
            batch.repeated = [(r[11], r[12]) for r in batch.upserts if (r[11], r[12]) in repeated]
        batch.names = [(ident, name) for name, ident in self.names.items()]


def fold(
    messages: Mapping[int, Sequence[LogMessage]],
    applied: Mapping[int, int],
    backend: type[BaseXCom],
) -> ViewBatch:
    """Fold fetched messages (partition -> messages in log order) into one ViewBatch.

    Messages below ``applied[partition]`` were applied already and are skipped. With a
    backend that purges external payloads, the rows the batch itself supersedes are
    collected in ``superseded``.
    """
    # Folding allocates a few containers per event and makes no reference cycle, so the
    # cyclic garbage collector finds nothing in them, and its passes over them were most of
    # what the version rules added to a rebuild's CPU (benchmarks/analysis.md, issue 14).
    # Paused for the fold alone (a synchronous call: no other coroutine runs meanwhile).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _fold(messages, applied, backend)
    finally:
        if enabled:
            gc.enable()


def _fold(messages: Mapping[int, Sequence[LogMessage]], applied: Mapping[int, int],
          backend: type[BaseXCom]) -> ViewBatch:
    batch = ViewBatch()
    collect_superseded = backend_purges(backend)
    step = _Step(batch)
    steps = [step]
    runs: dict[tuple[str, str], int] = {}
    #: task instance -> its state (:data:`_TIState`), whichever step it was last seen in.
    known: dict[TaskInstanceKey, _TIState] = {}

    serial = 0  # the current step's number

    def new_step() -> _Step:
        nonlocal step, serial
        serial += 1
        step = _Step(ViewBatch())
        steps[-1].batch.then = step.batch
        steps.append(step)
        return step

    # The hot loop runs once per event: a task instance's events arrive together, so its
    # decoded key, position in the step and row dict are reused while the raw key repeats,
    # and XCom keys and codecs already checked in this batch are not checked again.
    last_raw: bytes | None = None
    ti: TaskInstanceKey  # set by the first message: last_raw starts as None
    #: The task instance's state (None: no event of it in the batch yet).
    state: _TIState | None = None
    key: str
    codec: str | None
    value: bytes | None
    rows: dict[str, Row] | None
    valid_keys: set[str] = set()
    readable: set[str] = set()
    for partition, batch_messages in messages.items():
        floor = applied.get(partition, 0)
        count = 0
        for message in batch_messages:
            offset = message.offset
            if offset < floor:
                continue
            count += 1
            try:
                raw = message.key
                if raw != last_raw or raw is None:
                    last_raw = None  # a key that fails to decode must not be reused
                    ti = decode_ti_key(raw)
                    state = known.get(ti)
                    last_raw = raw
                event = decode_event(message.value)
                # The kinds are final Structs: one type() read instead of an isinstance per test.
                kind = type(event)
                if kind is Clear:
                    key, codec, value = "", None, None
                else:
                    if TYPE_CHECKING:  # what ``kind`` says, for the type checker only
                        assert not isinstance(event, Clear)
                    key, codec, value = event.key, event.codec, event.value
                    if key not in valid_keys:
                        try:
                            valid_keys.add(validate_key(key))
                        except XComIdentifierError as exc:
                            raise EventDecodeError(str(exc)) from None
                    if codec is not None and value is not None:  # None: an override that deletes
                        if codec not in readable:
                            if not backend.can_read(codec):
                                raise EventDecodeError(
                                    f"codec {codec!r} cannot be read by the configured backend "
                                    f"{backend.__module__}.{backend.__qualname__}")
                            readable.add(codec)
                        try:
                            backend.check_stored(value, codec)
                        except ValueError as exc:
                            raise EventDecodeError(
                                f"{backend.__qualname__} refuses the value: {exc}") from None
            except EventDecodeError as exc:
                batch.dead.append(DeadLetter(partition, offset, message.key, message.value, str(exc),
                                             message.timestamp))
                continue
            except Exception as exc:  # a bug of ours or a backend's: park the event, loudly
                log.exception("unexpected error decoding partition %d offset %d", partition, offset)
                batch.dead.append(DeadLetter(partition, offset, message.key, message.value,
                                             f"unexpected {type(exc).__name__}: {exc}", message.timestamp))
                continue

            if kind is Override:  # a step by itself, applied in log order like a push
                if TYPE_CHECKING:
                    assert isinstance(event, Override)
                if not step.empty():
                    new_step()
                step.batch.override = (*ti, key, value, codec, event.ts, event.producer, event.actor,
                                       partition, offset)
                new_step()  # the task instance's state is stale from here on
                continue

            # A push or a clear. A try below 1 counts as 1 (the stored default).
            if TYPE_CHECKING:
                assert not isinstance(event, Override)
            try_number = event.try_number
            effective = try_number if try_number > 1 else 1
            producer = event.producer
            if state is None or state[4] != serial or effective != state[1]:  # not its try in this step
                if state is not None and effective < state[1]:  # older than a try this batch saw: fenced
                    step.batch.versions.append(
                        (version_ident(ti_ident(*ti), event.key), partition, offset, KIND_PUSH, try_number,
                         event.ts, step.name(producer), None, len(event.value), content_hash(event.value), 1)
                        if isinstance(event, Push) else
                        (version_ident(ti_ident(*ti)), partition, offset, KIND_CLEAR, try_number, event.ts,
                         step.name(producer), None, None, None, 1))
                    continue
                if state is not None and state[4] == serial:  # a newer try, judged anew
                    new_step()
                state = known[ti] = [len(step.batch.tis), effective, False, None, serial]
                step.states.append(state)
                step.batch.tis.append((*ti, effective, partition, ()))
            if kind is Clear:
                gone = state[3]
                state[3] = None
                if gone:
                    for row in gone.values():
                        step.gone(row, state)
                    if collect_superseded:
                        batch.superseded.extend(gone.values())
                step.batch.clears.append((*ti, partition, offset))
                state[2] = True
                step.batch.versions.append((version_ident(ti_ident(*ti)), partition, offset, KIND_CLEAR,
                                            try_number, event.ts, step.name(producer), None, None, None, 0))
                step.marks.setdefault(state[0], []).append(offset)
                continue
            if TYPE_CHECKING:
                assert isinstance(event, Push)
            key, value, codec = event.key, event.value, event.codec  # a push has all three
            rows = state[3]
            if rows is None:
                rows = state[3] = {}
            previous = rows.get(key)
            if previous is not None:
                if previous[9] == producer and previous[10] == try_number and previous[6] == codec and \
                        previous[5] == value:
                    # A re-send of the current row: no version, unless the task instance is fenced.
                    step.batch.held.append((version_ident(ti_ident(*ti), key), partition, offset, KIND_PUSH,
                                            try_number, event.ts, step.name(producer), None, len(value),
                                            content_hash(value), 1, state[0]))
                    continue
                step.gone(previous, state)
                step.repeated.add((partition, offset))
                if collect_superseded:
                    batch.superseded.append(previous)
            elif state[2]:  # cleared in the step: not the XCom's first write there
                step.repeated.add((partition, offset))
            logical_date: int | str
            if event.logical_date is None:
                logical_date = ""  # NULL in the view, and bound faster than None (store.UPSERT)
            else:
                logical_date = event.logical_date
                runs[ti[:2]] = logical_date
            rows[key] = (*ti, key, value, codec, event.ts, logical_date, producer, try_number, partition,
                         offset)
        if batch_messages:
            batch.offsets[partition] = max(floor, batch_messages[-1].offset + 1)
            batch.events[partition] = count
    for folded in steps:
        folded.close()
    if len(steps) > 1 and steps[-1].empty():  # the step opened after a trailing override
        steps[-2].batch.then = None
    batch.runs = [(dag_id, run_id, date) for (dag_id, run_id), date in runs.items()]
    return batch
