"""fold (pure): log messages in, one view batch out; and the purge helpers (no broker)."""

from __future__ import annotations

from typing import ClassVar

from xcombus import MsgspecXCom, XComRecord
from xcombus.backends import backend_purges, purge_payloads
from xcombus.events import SCHEMA_VERSION, Push, TaskInstanceKey, encode_event
from xcombus.fold import fold
from xcombus.store import DeadLetter, row_record

from .batches import TI, Rec, clear, push, recs


def test_fold_keeps_last_push_per_xcom() -> None:
    batch = fold({0: recs(push("a", b"1"), push("b", b"2"), push("a", b"3"))}, {}, MsgspecXCom)
    values = {row[4]: row[5] for row in batch.upserts}
    assert values == {"a": b"3", "b": b"2"}
    assert batch.offsets == {0: 3} and batch.events == {0: 3}


def test_fold_clear_drops_earlier_pushes_of_the_batch() -> None:
    batch = fold({0: recs(push("a", b"1"), push("b", b"2"), clear(), push("a", b"4"))}, {}, MsgspecXCom)
    assert batch.clears == [(*TI, 0, 2)]  # the task instance, where the clear stands
    assert [(row[4], row[5]) for row in batch.upserts] == [("a", b"4")]


def test_fold_skips_records_already_applied() -> None:
    batch = fold({0: recs(push("a", b"1"), push("a", b"2"), push("a", b"3"))}, {0: 2}, MsgspecXCom)
    assert [row[5] for row in batch.upserts] == [b"3"]
    assert batch.events == {0: 1} and batch.offsets == {0: 3}


def test_fold_dead_letters_bad_records_and_keeps_the_rest() -> None:
    batch = fold({1: recs(push("a", b"1"), (b"not a key", b"x"), (TI.encode(), b"\xc1garbage"),
                          (None, b"x"), push("b", b"2"))}, {}, MsgspecXCom)
    assert sorted(row[4] for row in batch.upserts) == ["a", "b"]
    assert [d.offset for d in batch.dead] == [1, 2, 3]
    assert "task instance key" in batch.dead[0].reason
    assert "undecodable" in batch.dead[1].reason
    assert batch.offsets == {1: 5}


def test_fold_dead_letters_unknown_codec() -> None:
    key, _ = push("a", b"1")
    other = encode_event(Push(schema=1, key="a", value=b"1", codec="pickle", ts=1, producer="p"))
    batch = fold({0: [Rec(0, key, other)]}, {}, MsgspecXCom)
    assert not batch.upserts and "codec 'pickle'" in batch.dead[0].reason


def test_integers_beyond_64_bits_are_dead_letters_not_failed_writes() -> None:
    huge = encode_event(Push(schema=SCHEMA_VERSION, key="k", value=b"1", codec=MsgspecXCom.codec,
                             ts=2**63, producer="p"))
    key = b'["d","r","t",18446744073709551616]'
    batch = fold({0: recs((TI.encode(), huge), (key, push("a", b"2")[1]), push("b", b"3"))}, {},
                 MsgspecXCom)
    assert [d.offset for d in batch.dead] == [0, 1]
    assert "<= 9223372036854775807" in batch.dead[0].reason
    assert [row[4] for row in batch.upserts] == ["b"]


def test_fold_keeps_each_dead_letter_whole_with_its_timestamp() -> None:
    batch = fold({2: [Rec(7, b"not a key", b"x", 1234)]}, {}, MsgspecXCom)
    assert batch.dead == [DeadLetter(2, 7, b"not a key", b"x", batch.dead[0].reason, 1234)]
    assert batch.events == {2: 1} and batch.offsets == {2: 8}


def test_fold_of_stored_dead_letters_reads_them_as_messages() -> None:
    # The dead-letter retry folds the table's rows: a DeadLetter carries what fold reads.
    key, value = push("a", b"1")
    batch = fold({0: [DeadLetter(0, 4, key, value, "old reason", None)]}, {}, MsgspecXCom)
    assert [(row[4], row[12]) for row in batch.upserts] == [("a", 4)] and not batch.dead


def test_fold_records_the_run_dates_and_a_missing_date_as_empty() -> None:
    other = TaskInstanceKey("dag", "run2", "task")
    batch = fold({0: recs(push("a", b"1", logical_date=5), push("b", b"2"),
                          push("c", b"3", other, logical_date=9), push("d", b"4", logical_date=6))},
                 {}, MsgspecXCom)
    assert sorted(batch.runs) == [("dag", "run", 6), ("dag", "run2", 9)]  # per run, its last push's date
    dates = {row[4]: row[8] for row in batch.upserts}
    assert dates == {"a": 5, "b": "", "c": 9, "d": 6}
    assert {r.key: r.logical_date for r in map(row_record, batch.upserts)} == {"a": 5, "b": None, "c": 9,
                                                                                 "d": 6}


def test_fold_over_partitions_counts_each_one() -> None:
    other = TaskInstanceKey("dag", "run", "elsewhere")
    batch = fold({0: recs(push("a", b"1"), push("a", b"2")), 3: recs(push("a", b"3", other), start=10)},
                 {0: 1}, MsgspecXCom)
    assert batch.offsets == {0: 2, 3: 11} and batch.events == {0: 1, 3: 1}
    assert sorted((row[2], row[11], row[12]) for row in batch.upserts) == [("elsewhere", 3, 10),
                                                                            ("task", 0, 1)]


def test_fold_never_moves_an_offset_backwards() -> None:
    # A batch entirely below what was handed over already: nothing applied, offset kept.
    batch = fold({0: recs(push("a", b"1"), push("a", b"2"))}, {0: 5}, MsgspecXCom)
    assert not batch.upserts and batch.offsets == {0: 5} and batch.events == {0: 0}


class _Purging(MsgspecXCom):
    purged: ClassVar[list[bytes]] = []

    @classmethod
    def purge(cls, result: XComRecord) -> None:
        if result.value == b'"boom"':
            raise OSError("the store is down")
        cls.purged.append(result.value)


def test_backend_purges_only_when_purge_is_overridden() -> None:
    assert not backend_purges(MsgspecXCom)
    assert backend_purges(_Purging)


def test_fold_collects_what_the_batch_supersedes_only_for_purging_backends() -> None:
    messages = {0: recs(push("a", b'"1"'), push("a", b'"2"'), push("b", b'"3"'), clear(), push("a", b'"4"'))}
    assert fold(messages, {}, MsgspecXCom).superseded == []
    batch = fold(messages, {}, _Purging)
    # "1" replaced by "2"; then the clear drops "2" and "3"; "4" stays.
    assert sorted(row[5] for row in batch.superseded) == [b'"1"', b'"2"', b'"3"']
    assert [row[5] for row in batch.upserts] == [b'"4"']


async def test_purge_payloads_skips_kept_values_and_survives_a_failing_purge() -> None:
    _Purging.purged = []
    rows = fold({0: recs(push("a", b'"x"'), push("b", b'"boom"'), push("c", b'"keep"'),
                         push("d", b'"y"'))}, {}, MsgspecXCom).upserts
    await purge_payloads(_Purging, [row_record(r) for r in rows], keep={b'"keep"'})
    assert sorted(_Purging.purged) == [b'"x"', b'"y"']  # the failure is logged, the rest purged
