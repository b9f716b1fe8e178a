"""The pure parts of /api/v2: scoped tokens from configuration, and Airflow's listing
filters compiled to SQL (run here against an in-memory SQLite with the view's tables)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from xcombus import Settings, XComConfigError
from xcombus.search import XComSearch, count_sql, like_terms, order_sql, prefix_ranges, search_sql
from xcombus.store import SCHEMA
from xcombus.web.tokens import Principal, TokenStore

pytestmark = pytest.mark.unit


def store(**settings: str) -> TokenStore:
    return TokenStore.from_settings(Settings.from_env({}, **settings))


def test_tokens_from_the_environment_a_file_and_the_older_setting(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# ci reads\nci:read:c-secret\n\nops:write:o:secret:with:colons\n")
    tokens = store(api_tokens="alice:write:a-secret, bob:read:b-secret", api_tokens_file=str(file),
                   api_token="legacy", api_users="alice:pw")
    assert tokens.principal("a-secret") == Principal("alice", "write")
    assert tokens.principal("b-secret") == Principal("bob", "read")
    assert tokens.principal("c-secret") == Principal("ci", "read")
    assert tokens.principal("o:secret:with:colons") == Principal("ops", "write")
    assert tokens.principal("legacy") == Principal("api_token", "read")
    assert tokens.principal("a-secre") is None and tokens.principal("") is None
    assert tokens.configured and tokens.writable
    assert tokens.login("alice", "pw") == "a-secret" and tokens.login("alice", "nope") is None
    assert tokens.login("bob", "pw") is None
    shown = repr(tokens)
    assert "alice" in shown and not any(s in shown for s in ("a-secret", "b-secret", "legacy", "pw'"))
    settings = Settings.from_env({}, api_tokens="alice:write:a-secret", api_users="alice:pw")
    assert "a-secret" not in repr(settings) and ":pw" not in repr(settings)


def test_no_token_is_an_open_read_only_server() -> None:
    tokens = store()
    assert not tokens.configured and not tokens.writable and tokens.principal("x") is None
    assert store(api_token="t").writable is False


@pytest.mark.parametrize(("settings", "words"), [
    ({"api_tokens": "alice:admin:s"}, "XCOMBUS_API_TOKENS entry 1"),
    ({"api_tokens": "ok:read:s,bad name:read:s"}, "entry 2"),
    ({"api_tokens": "alice:read:"}, "NAME:SCOPE:SECRET"),
    ({"api_tokens_file": "/nonexistent/tokens"}, "cannot be read"),
    ({"api_tokens": "alice:read:s", "api_users": "carol:pw"}, "'carol' has no token"),
    ({"api_users": "alice"}, "NAME:PASSWORD"),
])
def test_malformed_configuration_names_the_entry_never_the_secret(settings: dict[str, str], words: str) -> None:
    with pytest.raises(XComConfigError, match=words) as error:
        store(**settings)
    assert ":s" not in str(error.value).replace("NAME:SCOPE:SECRET", "")


def test_pattern_terms_as_airflow() -> None:
    assert like_terms("ret|met") == ["%ret%", "%met%"]
    assert like_terms(" a | |b ") == ["%a%", "%b%"]
    assert like_terms("~") == ["%%%"] and like_terms("|") == ["%|%"]
    assert prefix_ranges("test_") == [("test", "tesu")]
    assert prefix_ranges("az|Z9") == [("az", "b"), ("Z9", None)]  # nothing alphanumeric follows 'Z9'
    assert prefix_ranges("~") == [("", None)] and prefix_ranges("--") == [("", None)]
    assert prefix_ranges("az") == [("az", "b")]  # 'z'+1 is no alphanumeric: bump the 'a' instead


ROWS = [("etl", "r1", "extract", -1, "return_value", 100, 10), ("etl", "r1", "extract", -1, "Meta", 200, 10),
        ("etl", "r2", "load", 0, "summary_x", 300, None), ("other", "r9", "t", 3, "k_1", 400, None)]


@pytest.fixture
def view() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    for dag, run, task, index, key, ts, logical in ROWS:
        db.execute("INSERT INTO xcom VALUES (?,?,?,?,?,x'00','c',?,?, 'p', 1, 0, ?)",
                   (dag, run, task, index, key, ts, logical, ts))
    db.execute("INSERT INTO dag_run VALUES ('etl', 'r1', 10)")
    return db


def keys(db: sqlite3.Connection, search: XComSearch) -> list[str]:
    select, where, params = search_sql(search)
    rows = db.execute(f"{select}{where}{order_sql(search)}", params).fetchall()
    count, count_params = count_sql(search)
    assert db.execute(count, count_params).fetchone()[0] == len(rows)
    return [r[4] for r in rows]


@pytest.mark.parametrize(("search", "expected"), [
    (XComSearch(), ["Meta", "return_value", "summary_x", "k_1"]),
    (XComSearch(key_patterns=("META",)), ["Meta"]),
    (XComSearch(key_patterns=("k_1",)), ["k_1"]),
    (XComSearch(key_patterns=("y_x|k",)), ["summary_x", "k_1"]),
    (XComSearch(key_patterns=("r%x",)), ["summary_x"]),
    (XComSearch(key_patterns=(r"y\_x",)), ["summary_x"]),
    (XComSearch(key_prefixes=("Me",)), ["Meta"]),
    (XComSearch(key_prefixes=("me",)), []),
    (XComSearch(key_prefixes=("k_",)), ["k_1"]),
    (XComSearch(key_prefixes=("~",), run_prefixes=("r1",)), ["Meta", "return_value"]),
    (XComSearch(key_patterns=("m",), key_prefixes=("s",)), ["summary_x"]),
    (XComSearch(logical_date=(10, None, None, None)), ["Meta", "return_value"]),
    (XComSearch(run_after=(None, None, 300, None)), ["Meta", "return_value", "summary_x"]),
    (XComSearch(run_after=(None, 10, None, None)), ["summary_x", "k_1"]),
    (XComSearch(order=(("timestamp", True),)), ["k_1", "summary_x", "Meta", "return_value"]),
    (XComSearch(order=(("map_index", True), ("key", False))), ["k_1", "summary_x", "Meta", "return_value"]),
    (XComSearch(order=(("run_after", False),)), ["Meta", "return_value", "summary_x", "k_1"]),
])
def test_search_filters_and_orders(view: sqlite3.Connection, search: XComSearch, expected: list[str]) -> None:
    assert keys(view, search) == expected
