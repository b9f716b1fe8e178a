"""Fold log messages into one view batch (pure), and purge what a batch superseded.

Within a batch the last push per XCom wins; a clear drops the task instance's earlier
pushes of the batch and deletes its stored rows. One task instance lives in one partition
and messages are folded in log order, so writing the folded batch equals applying every
event one by one. Anything that is not a valid event of ours becomes a dead letter with
the reason (invariant 7): a message is never misread, and the ones around it still apply.

The materializer, ``rebuild`` and the dead-letter retry all fold with :func:`fold`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from .backends import BaseXCom, backend_purges
from .errors import XComIdentifierError
from .events import EventDecodeError, Push, TaskInstanceKey, decode_event, decode_ti_key, validate_key
from .store import DeadLetter, Row, ViewBatch

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
    batch = ViewBatch()
    collect_superseded = backend_purges(backend)
    # task instance -> XCom key -> row: a clear drops its task instance's rows in one pop.
    by_ti: dict[TaskInstanceKey, dict[str, Row]] = {}
    runs: dict[tuple[str, str], int] = {}
    # The hot loop runs once per event: a task instance's events arrive together, so its
    # decoded key and row dict are reused while the raw key repeats, and XCom keys and
    # codecs already checked in this batch are not checked again.
    last_raw: bytes | None = None
    ti: TaskInstanceKey  # set by the first message: last_raw starts as None
    rows: dict[str, Row] | None = None
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
                    rows = by_ti.get(ti)
                    last_raw = raw
                event = decode_event(message.value)
                # ``type(...) is`` rather than isinstance: this runs once per event.
                if type(event) is not Push:  # a clear
                    gone = by_ti.pop(ti, None)
                    rows = None
                    if collect_superseded and gone:
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
                batch.dead.append(DeadLetter(partition, offset, message.key, message.value, str(exc),
                                             message.timestamp))
                continue
            except Exception as exc:  # a bug of ours or a backend's: park the event, loudly
                log.exception("unexpected error decoding partition %d offset %d", partition, offset)
                batch.dead.append(DeadLetter(partition, offset, message.key, message.value,
                                             f"unexpected {type(exc).__name__}: {exc}", message.timestamp))
                continue
            if rows is None:
                rows = by_ti[ti] = {}
            elif collect_superseded and key in rows:
                batch.superseded.append(rows[key])
            logical_date: int | str
            if event.logical_date is None:
                logical_date = ""  # NULL in the view, and bound faster than None (store.UPSERT)
            else:
                logical_date = event.logical_date
                runs[ti[:2]] = logical_date
            rows[key] = (*ti, key, event.value, codec, event.ts, logical_date, event.producer,
                         event.try_number, partition, offset)
        if batch_messages:
            batch.offsets[partition] = max(floor, batch_messages[-1].offset + 1)
            batch.events[partition] = count
    batch.upserts = [row for rows_of_ti in by_ti.values() for row in rows_of_ti.values()]
    batch.runs = [(dag_id, run_id, date) for (dag_id, run_id), date in runs.items()]
    return batch
