"""Airflow's xcom_pull rules without a broker: plan_pull and shape_pull, row by row.

tests/integration/test_semantics.py checks the same rules end to end on the real broker.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from xcombus import NOTSET, NotSet, TaskInstanceKey
from xcombus.pull_rules import PullPlan, plan_pull, shape_pull

RUN = "manual__2026-11-24T00:00:00+00:00"
ME = TaskInstanceKey("dag", RUN, "me")


class Row(NamedTuple):
    task_id: str
    map_index: int


def pull(rows: list[tuple[str, int, Any]], task_ids: Any = None, *, map_indexes: Any = NOTSET,
         default: Any = None, dag_id: str | None = None, run_id: str | None = None) -> Any:
    """Plan a pull by ME, answer it from ``rows`` as the view would (only the rows it asked
    for, by task then map index), and shape the answer."""
    plan = plan_pull(ME, task_ids, dag_id, run_id, map_indexes)
    asked = [r for r in sorted(rows, key=lambda r: (r[0], r[1])) if r[0] in plan.task_ids
             and (plan.map_indexes is None or r[1] in plan.map_indexes)]
    return shape_pull(plan, [Row(t, i) for t, i, _ in asked], [v for _, _, v in asked], default)


def test_task_ids_none_means_the_calling_task() -> None:
    assert pull([("me", -1, "mine"), ("other", -1, "theirs")]) == "mine"


def test_unmapped_upstream_gives_its_bare_value() -> None:
    assert pull([("up", -1, {"a": 1})], "up") == {"a": 1}


def test_mapped_upstream_gives_a_list_in_map_index_order() -> None:
    rows = [("mapped", i, f"v{i}") for i in (2, 0, 3, 1)]
    assert pull(rows, "mapped") == ["v0", "v1", "v2", "v3"]


def test_mapped_upstream_with_one_instance_collapses_to_its_value() -> None:
    assert pull([("mapped", 0, "only")], "mapped") == "only"


def test_single_task_with_nothing_returns_default() -> None:
    assert pull([], "nothing") is None
    assert pull([], "nothing", default=42) == 42


def test_list_of_task_ids_gives_a_flat_list_in_task_order() -> None:
    rows = [("b", -1, "B"), ("a", -1, "A"), ("m", 0, 0), ("m", 1, 1)]
    assert pull(rows, ["b", "a"]) == ["B", "A"]
    assert pull(rows, ["m", "a"]) == [0, 1, "A"]
    # A task with nothing contributes one None (Airflow 3), and a one-element list stays a list.
    assert pull(rows, ["a", "missing", "b"]) == ["A", None, "B"]
    assert pull(rows, ["a"]) == ["A"]
    assert pull(rows, ["missing"], default="d") == [None]  # the default is for a single task


def test_map_indexes_int_gives_one_value() -> None:
    rows = [("m", i, i * 10) for i in range(3)]
    assert pull(rows, "m", map_indexes=2) == 20
    assert pull(rows, "m", map_indexes=7, default="d") == "d"


def test_map_indexes_none_reads_the_unmapped_value() -> None:
    rows = [("t", -1, "unmapped"), ("t", 0, "mapped")]
    assert pull(rows, "t", map_indexes=None) == "unmapped"


def test_map_indexes_list_gives_product_order_with_defaults() -> None:
    rows = [(t, i, f"{t}{i}") for t in ("x", "y") for i in range(2)]
    assert pull(rows, ["y", "x"], map_indexes=[1, 0, 5], default="-") == ["y1", "y0", "-", "x1", "x0", "-"]
    assert pull(rows, "x", map_indexes=[1]) == ["x1"]
    assert pull(rows, ["x"], map_indexes=0) == ["x0"]


def test_a_pushed_none_is_a_value_not_a_miss() -> None:
    assert pull([("up", -1, None)], "up", map_indexes=None, default="d") is None


def test_plan_reads_the_pullers_run_unless_told_otherwise() -> None:
    plan = plan_pull(ME, "up", None, None, NOTSET)
    assert plan == PullPlan("dag", RUN, ["up"], None, one_task=True, one_index=False, same_run=True)
    other = plan_pull(ME, ["a", "b"], "dag2", None, [3, 1])
    assert other == PullPlan("dag2", RUN, ["a", "b"], [3, 1], one_task=False, one_index=False,
                             same_run=False)
    assert plan_pull(ME, None, "dag", RUN, None).same_run  # naming its own run is the same run
    assert not plan_pull(ME, None, None, "scheduled__1", None).same_run
    assert plan_pull(ME, (t for t in "ab"), None, None, iter([0])).task_ids == ["a", "b"]


@pytest.mark.parametrize(("map_indexes", "indexes", "one_index"), [
    (NOTSET, None, False), (None, [-1], True), (4, [4], True), ([2, 0], [2, 0], False), ((), [], False)])
def test_plan_map_indexes(map_indexes: Any, indexes: list[int] | None, one_index: bool) -> None:
    plan = plan_pull(ME, "t", None, None, map_indexes)
    assert (plan.map_indexes, plan.one_index) == (indexes, one_index)


def test_shape_refuses_rows_and_values_of_different_lengths() -> None:
    plan = plan_pull(ME, "t", None, None, NOTSET)
    with pytest.raises(ValueError):
        shape_pull(plan, [Row("t", -1)], [], None)


def test_notset_is_an_instance_of_the_public_type() -> None:
    assert isinstance(NOTSET, NotSet) and repr(NOTSET) == "NOTSET"
    assert NOTSET is not None
