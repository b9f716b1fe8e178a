"""Airflow 3's XCom listing filters (REST API v2), compiled to one SQL query over the view.

    search = XComSearch(key_patterns=("ret|met",), order=(("timestamp", True),))
    rows, total = reader.search(search, limit=50, offset=0)      # ViewReader.search

The semantics are Airflow 3.3's (``airflow/api_fastapi/common/parameters.py``):

* ``*_pattern``: a case-insensitive substring match, ``LIKE '%term%'``. ``%`` and ``_`` in
  the term are wildcards and ``\\`` escapes them (PostgreSQL's ILIKE, Airflow's usual
  database); ``|`` splits the value into OR'ed terms (stripped, empty ones dropped); the
  value ``~`` matches everything. SQLite folds case for ASCII letters only.
* ``*_prefix_pattern``: a case-sensitive prefix match done as a range ``lo <= col < hi``
  after stripping trailing non-alphanumerics (``test_`` matches like ``test``); ``%`` and
  ``_`` are literal; ``|`` ORs terms; ``~``, or a term without alphanumerics, matches all.
* ``logical_date_*`` bound the run's logical date (an XCom whose run has none drops out as
  soon as a bound is given); ``run_after_*`` bound :data:`RUN_AFTER`.
* ``order``: columns of :data:`ORDER_COLUMNS`, each ascending or descending; the XCom's
  identity, in the first column's direction, breaks ties so pages never overlap.

Only bound parameters carry values into SQL: column names come from fixed tables here.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .store import COLUMNS

__all__ = ["DEFAULT_ORDER", "LOGICAL_DATE", "ORDER_COLUMNS", "RUN_AFTER", "XComSearch",
           "count_sql", "like_terms", "order_sql", "prefix_ranges", "search_sql"]

#: The run's logical date: the one the run's pushes carry (the ``dag_run`` table), else the row's own.
LOGICAL_DATE: Final = "COALESCE(r.logical_date, x.logical_date)"
#: Airflow's ``run_after`` (when the scheduler may start the run) has no xcombus event of its
#: own: it is the run's logical date, and for a run without one (manual runs in Airflow 3)
#: the time of the earliest XCom the view holds for that run.
RUN_AFTER: Final = ("COALESCE(r.logical_date, x.logical_date, (SELECT min(y.timestamp) FROM xcom y "
                    "WHERE y.dag_id = x.dag_id AND y.run_id = x.run_id))")

#: ``order_by`` names (Airflow's) and the SQL they sort on.
ORDER_COLUMNS: Final = {"key": "x.key", "dag_id": "x.dag_id", "run_id": "x.run_id", "task_id": "x.task_id",
                        "map_index": "x.map_index", "timestamp": "x.timestamp", "run_after": "run_after"}
#: Airflow's default order of a listing.
DEFAULT_ORDER: Final = ("dag_id", "task_id", "run_id", "map_index", "key")
_IDENTITY: Final = ("x.dag_id", "x.run_id", "x.task_id", "x.map_index", "x.key")
_SELECT: Final = ", ".join(f"x.{c.strip()}" for c in COLUMNS.split(","))
_FROM: Final = "FROM xcom x LEFT JOIN dag_run r ON r.dag_id = x.dag_id AND r.run_id = x.run_id"

Range = tuple[int | None, int | None, int | None, int | None]  # gte, gt, lte, lt (µs)


class XComSearch(msgspec.Struct, frozen=True, kw_only=True):
    """One listing's filters and order; ``None`` (or an empty tuple of patterns) filters nothing.

    Each ``*_patterns`` / ``*_prefixes`` entry is one query parameter's raw value, so two
    given together must both match (AND), as in Airflow.
    """

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    key: str | None = None
    map_index: int | None = None
    #: Substring patterns (``*_pattern``) per column: key, dag (display name = id), run, task.
    key_patterns: tuple[str, ...] = ()
    dag_patterns: tuple[str, ...] = ()
    run_patterns: tuple[str, ...] = ()
    task_patterns: tuple[str, ...] = ()
    #: Prefix patterns (``*_prefix_pattern``) per column.
    key_prefixes: tuple[str, ...] = ()
    dag_prefixes: tuple[str, ...] = ()
    run_prefixes: tuple[str, ...] = ()
    task_prefixes: tuple[str, ...] = ()
    logical_date: Range = (None, None, None, None)
    run_after: Range = (None, None, None, None)
    #: ``(order_by name, descending)`` pairs; empty: :data:`DEFAULT_ORDER`.
    order: tuple[tuple[str, bool], ...] = ()


def _terms(value: str) -> list[str]:
    """Airflow's split of a pattern value: ``|`` ORs terms when it yields any non-empty one."""
    if "|" in value:
        terms = [t.strip() for t in value.split("|") if t.strip()]
        if terms:
            return terms
    return [value]


def like_terms(value: str) -> list[str]:
    """The LIKE patterns of one ``*_pattern`` value (``~`` alone matches all)."""
    if value == "~":
        value = "%"
    return [f"%{term}%" for term in _terms(value)]


def _strip_tail(term: str) -> str:
    while term and not term[-1].isalnum():
        term = term[:-1]
    return term


def _upper(term: str) -> str | None:
    """The exclusive upper bound of a prefix range (Airflow's ``_prefix_range_upper``)."""
    term = _strip_tail(term)
    while term:
        last = ord(term[-1])
        bumped = chr(last + 1) if last < 0x10FFFF else ""
        if bumped and bumped.isalnum():
            return term[:-1] + bumped
        term = _strip_tail(term[:-1])
    return None


def prefix_ranges(value: str) -> list[tuple[str, str | None]]:
    """The ``(lower, upper)`` ranges of one ``*_prefix_pattern`` value; an empty lower bound
    matches every row (``~``, or a term without alphanumerics)."""
    if value == "~":
        value = ""
    return [(_strip_tail(term), _upper(term)) for term in _terms(value)]


def _or(clauses: list[str]) -> str:
    return clauses[0] if len(clauses) == 1 else "(" + " OR ".join(clauses) + ")"


def search_sql(search: XComSearch) -> tuple[str, str, list[Any]]:
    """``(select, where, params)``: the SELECT of the rows (the view's columns, then the
    logical date and run_after in µs) with its FROM, and the WHERE clause with its
    parameters; the caller appends ORDER BY / LIMIT (see :func:`order_sql`) or counts."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("x.dag_id", search.dag_id), ("x.run_id", search.run_id),
                          ("x.task_id", search.task_id), ("x.key", search.key),
                          ("x.map_index", search.map_index)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    for column, values in (("x.key", search.key_patterns), ("x.dag_id", search.dag_patterns),
                           ("x.run_id", search.run_patterns), ("x.task_id", search.task_patterns)):
        for value in values:
            patterns = like_terms(value)
            where.append(_or([f"{column} LIKE ? ESCAPE '\\'"] * len(patterns)))
            params += patterns
    for column, values in (("x.key", search.key_prefixes), ("x.dag_id", search.dag_prefixes),
                           ("x.run_id", search.run_prefixes), ("x.task_id", search.task_prefixes)):
        for value in values:
            clauses = []
            for lower, upper in prefix_ranges(value):
                if not lower:
                    clauses.append(f"{column} IS NOT NULL")
                elif upper is None:
                    clauses.append(f"{column} >= ?")
                    params.append(lower)
                else:
                    clauses.append(f"({column} >= ? AND {column} < ?)")
                    params += [lower, upper]
            where.append(_or(clauses))
    for expression, bounds in ((LOGICAL_DATE, search.logical_date), (RUN_AFTER, search.run_after)):
        for operator, bound in zip((">=", ">", "<=", "<"), bounds, strict=True):
            if bound is not None:
                where.append(f"{expression} {operator} ?")
                params.append(bound)
    select = f"SELECT {_SELECT}, {LOGICAL_DATE} AS logical, {RUN_AFTER} AS run_after {_FROM}"
    return select, (" WHERE " + " AND ".join(where)) if where else "", params


def count_sql(search: XComSearch) -> tuple[str, list[Any]]:
    """The count of the rows :func:`search_sql` selects, and its parameters."""
    _select, where, params = search_sql(search)
    return f"SELECT count(*) {_FROM}{where}", params


def order_sql(search: XComSearch) -> str:
    """The ORDER BY clause: the asked columns, then the identity in the first one's direction."""
    order = search.order or tuple((name, False) for name in DEFAULT_ORDER)
    parts = [f"{ORDER_COLUMNS[name]}{' DESC' if desc else ''}" for name, desc in order]
    tie = " DESC" if order[0][1] else ""
    parts += [f"{column}{tie}" for column in _IDENTITY]
    return " ORDER BY " + ", ".join(parts)
