"""Airflow 3's REST API v2 of ``xcombus serve``, judged by Airflow's own client.

The official ``apache-airflow-client`` 3.3.2, unchanged, drives every method of its
``XComApi`` against a live ``xcombus serve`` process reading a view that a live
``xcombus materialize`` process keeps from the real broker: listing with wildcards and
every filter, reading in each deserialize/stringify form, creating, updating and deleting
(override events, awaited until the view shows them), with a write token, a read token,
no token, and on a server with no token configured. What the API wrote is then pulled by
a task and found in history with its actor and reason. schemathesis fuzzes the v2
operations from the server's own OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import airflow_client.client as ac
import pytest
from airflow_client.client.api.x_com_api import XComApi
from airflow_client.client.exceptions import (
    BadRequestException,
    ConflictException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
    UnprocessableEntityException,
)
from airflow_client.client.models.x_com_create_body import XComCreateBody
from airflow_client.client.models.x_com_update_body import XComUpdateBody

from tests.helpers import live_server, make_settings, start_materializer, stop_process
from tests.integration.http_data import (
    LOGICAL,
    LOGICAL2,
    META,
    ODD_KEY,
    PINNED_FUZZ,
    RUN,
    RUN2,
    TOKEN,
    populate,
)
from xcombus import Settings, XComBus
from xcombus.audit import history

pytestmark = pytest.mark.integration

WRITE = "w-secret-for-alice"
READ = "r-secret-for-bob"
PASSWORD = "alice-password"
TOKENS_ENV = {"XCOMBUS_API_TOKENS": f"alice:write:{WRITE},bob:read:{READ}", "XCOMBUS_API_USERS": f"alice:{PASSWORD}"}
SECRETS = (WRITE, READ, PASSWORD, TOKEN)


@pytest.fixture(scope="module")
def data_settings(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(kafka, tmp_path_factory.mktemp("http_v2"))
    populate(settings)
    materializer = start_materializer(settings)  # writes are awaited until a view applies them
    yield settings
    stop_process(materializer)


@pytest.fixture(scope="module")
def base_url(data_settings: Settings) -> Iterator[str]:
    with live_server(data_settings, token=TOKEN, extra_env=TOKENS_ENV, secrets=SECRETS) as url:
        yield url


def xcom_api(base_url: str, token: str | None) -> XComApi:
    return XComApi(ac.ApiClient(ac.Configuration(host=base_url, access_token=token)))


@pytest.fixture(scope="module")
def writer(base_url: str) -> XComApi:
    return xcom_api(base_url, WRITE)


@pytest.fixture(scope="module")
def reader(base_url: str) -> XComApi:
    return xcom_api(base_url, READ)


def idents(page: Any) -> list[tuple[str, str, str, int, str]]:
    return [(e.dag_id, e.run_id, e.task_id, e.map_index, e.key) for e in page.xcom_entries]


ETL = [("etl", RUN, "extract", -1, "meta"), ("etl", RUN, "extract", -1, "return_value"),
       ("etl", RUN2, "extract", -1, "return_value"), ("etl", RUN, "load", -1, "return_value"),
       ("etl", RUN, "load", -1, "summary"), *(("etl", RUN, "transform", i, "return_value") for i in range(4))]


# -- list ------------------------------------------------------------------------------------------
def test_list_everything_in_airflows_order_and_shape(reader: XComApi, base_url: str) -> None:
    page = reader.get_xcom_entries("etl", "~", "~")
    assert page.total_entries == 9 and idents(page) == ETL  # dag_id, task_id, run_id, map_index, key
    entry = page.xcom_entries[0]
    assert (entry.dag_display_name, entry.task_display_name) == ("etl", "extract")
    assert entry.logical_date == LOGICAL and entry.run_after == LOGICAL and entry.timestamp.tzinfo is not None
    # The wire: Airflow's ten fields in Airflow's order, RFC 3339 'Z' datetimes, no value.
    raw = _get_json(f"{base_url}/api/v2/dags/etl/dagRuns/~/taskInstances/extract/xcomEntries", READ)
    assert list(raw) == ["xcom_entries", "total_entries"]
    assert list(raw["xcom_entries"][0]) == ["key", "timestamp", "logical_date", "map_index", "task_id", "dag_id",
                                            "run_id", "dag_display_name", "task_display_name", "run_after"]
    assert raw["xcom_entries"][0]["logical_date"] == "2026-11-24T00:00:00Z"
    assert raw["xcom_entries"][0]["timestamp"].endswith("Z")


def test_list_other_runs_have_no_logical_date_and_run_after_is_their_first_xcom(reader: XComApi) -> None:
    page = reader.get_xcom_entries("other", "r1", "t")
    assert [e.key for e in page.xcom_entries] == ["k", ODD_KEY]
    first = min(e.timestamp for e in page.xcom_entries)
    assert all(e.logical_date is None and e.run_after == first for e in page.xcom_entries)


@pytest.mark.parametrize(("path", "filters", "expected"), [
    (("~", "~", "extract"), {}, 3),
    (("etl", RUN, "~"), {}, 8),
    (("~", "r1", "~"), {}, 2),
    (("etl", "~", "~"), {"xcom_key": "return_value"}, 7),
    (("etl", "~", "~"), {"map_index": -1}, 5),
    (("etl", "~", "~"), {"map_index_filter": 2}, 1),
    (("etl", "~", "~"), {"xcom_key_pattern": "ret|met"}, 8),
    (("etl", "~", "~"), {"xcom_key_pattern": "RETURN"}, 7),  # case-insensitive
    (("etl", "~", "~"), {"xcom_key_pattern": "s_mm%y"}, 1),  # % and _ are wildcards, as in Airflow
    (("etl", "~", "~"), {"xcom_key_pattern": "~"}, 9),
    (("etl", "~", "~"), {"xcom_key_prefix_pattern": "re"}, 7),
    (("etl", "~", "~"), {"xcom_key_prefix_pattern": "Re"}, 0),  # case-sensitive
    (("etl", "~", "~"), {"xcom_key_prefix_pattern": "summary_"}, 1),  # trailing punctuation ignored
    (("etl", "~", "~"), {"xcom_key_prefix_pattern": "ret|sum"}, 8),
    (("etl", "~", "~"), {"run_id_pattern": "SCHEDULED"}, 1),
    (("etl", "~", "~"), {"run_id_prefix_pattern": "manual"}, 8),
    (("etl", "~", "~"), {"task_id_pattern": "AN"}, 4),
    (("etl", "~", "~"), {"task_id_prefix_pattern": "tr|lo"}, 6),
    (("~", "~", "~"), {"dag_display_name_pattern": "oth"}, 2),
    (("~", "~", "~"), {"dag_display_name_prefix_pattern": "etl", "xcom_key_pattern": "ret",
                       "task_id_pattern": "extract"}, 2),
    (("~", "~", "~"), {"logical_date_gte": LOGICAL}, 8),  # runs without a logical date drop out
    (("~", "~", "~"), {"logical_date_lt": LOGICAL}, 1),
    (("~", "~", "~"), {"logical_date_lt": datetime(2026, 11, 24)}, 1),  # naive: UTC
    (("~", "~", "~"), {"logical_date_gt": LOGICAL2, "logical_date_lte": LOGICAL}, 8),
    (("~", "~", "~"), {"run_after_lte": LOGICAL2}, 1),
    (("~", "~", "~"), {"run_after_gte": LOGICAL, "run_after_lt": datetime(2026, 11, 24, 1, tzinfo=UTC)}, 8),
])
def test_list_filters_as_airflow(reader: XComApi, path: tuple[str, str, str], filters: dict[str, Any],
                                 expected: int) -> None:
    page = reader.get_xcom_entries(*path, **filters)
    assert page.total_entries == expected == len(page.xcom_entries), idents(page)


def test_list_orders_and_pages(reader: XComApi) -> None:
    newest = reader.get_xcom_entries("etl", "~", "~", order_by=["-timestamp"])
    stamps = [e.timestamp for e in newest.xcom_entries]
    assert stamps == sorted(stamps, reverse=True)
    by_index = reader.get_xcom_entries("etl", RUN, "transform", order_by=["-map_index"])
    assert [e.map_index for e in by_index.xcom_entries] == [3, 2, 1, 0]
    keys = reader.get_xcom_entries("etl", "~", "~", order_by=["key", "-run_id", "task_id"])
    assert [(e.key, e.run_id, e.task_id) for e in keys.xcom_entries][:3] == [
        ("meta", RUN, "extract"), ("return_value", RUN2, "extract"), ("return_value", RUN, "extract")]
    run_after = reader.get_xcom_entries("~", "~", "~", order_by=["run_after"], limit=1)
    assert idents(run_after) == [("etl", RUN2, "extract", -1, "return_value")]
    pages = [reader.get_xcom_entries("etl", "~", "~", limit=4, offset=o) for o in (0, 4, 8)]
    assert [len(p.xcom_entries) for p in pages] == [4, 4, 1] and {p.total_entries for p in pages} == {9}
    assert [i for p in pages for i in idents(p)] == ETL
    empty = reader.get_xcom_entries("etl", "~", "~", limit=0)
    assert (empty.xcom_entries, empty.total_entries) == ([], 9)
    assert reader.get_xcom_entries("nope", "~", "~").total_entries == 0
    assert reader.get_xcom_entries("bad dag!", "~", "~").total_entries == 0  # could never be pushed


def test_list_rejects_bad_order_and_bad_values(reader: XComApi, base_url: str) -> None:
    with pytest.raises(BadRequestException) as bad:
        reader.get_xcom_entries("~", "~", "~", order_by=["nope"])
    assert json.loads(bad.value.body) == {
        "detail": "Ordering with 'nope' is disallowed or the attribute does not exist on the model"}
    with pytest.raises(BadRequestException, match="more than 10"):
        reader.get_xcom_entries("~", "~", "~", order_by=["key"] * 11)
    url = f"{base_url}/api/v2/dags/~/dagRuns/~/taskInstances/~/xcomEntries"
    for query, loc, kind in (("limit=-1", "limit", "greater_than_equal"), ("map_index=-2", "map_index",
                             "greater_than_equal"), ("offset=x", "offset", "int_parsing"),
                             ("logical_date_gte=soon", "logical_date_gte", "datetime_from_date_parsing")):
        status, body = _request("GET", f"{url}?{query}", READ)
        assert status == 422, body
        assert body["detail"][0]["loc"] == ["query", loc] and body["detail"][0]["type"] == kind


# -- one entry ---------------------------------------------------------------------------------------
TYPED_META = {"when": {"__type__": "datetime", "__value__": "2026-11-24T06:30:00+00:00"},
              "tags": {"__type__": "set", "__value__": ["a"]}}


@pytest.mark.parametrize(("deserialize", "stringify", "expected"), [
    (None, None, TYPED_META),  # Airflow's defaults: false, false
    (False, False, TYPED_META),
    (True, False, {"when": "2026-11-24 06:30:00+00:00", "tags": "{'a'}"}),
    (False, True, str(TYPED_META)),
    (True, True, str(META)),
])
def test_get_entry_in_each_form(reader: XComApi, deserialize: bool | None, stringify: bool | None,
                                expected: Any) -> None:
    entry = reader.get_xcom_entry("etl", "extract", RUN, "meta", deserialize=deserialize,
                                  stringify=stringify).actual_instance
    assert (entry.dag_id, entry.task_id, entry.run_id, entry.map_index, entry.key) == (
        "etl", "extract", RUN, -1, "meta")
    assert entry.value == expected and entry.run_after == LOGICAL


def test_get_plain_values_none_and_map_indexes(reader: XComApi) -> None:
    rows = reader.get_xcom_entry("etl", "extract", RUN, "return_value")
    assert rows.actual_instance.value == {"rows": 42}
    assert reader.get_xcom_entry("etl", "extract", RUN, "return_value", stringify=True).actual_instance.value == \
        "{'rows': 42}"
    for deserialize in (False, True):
        for stringify in (False, True):
            none = reader.get_xcom_entry("other", "t", "r1", "k", deserialize=deserialize, stringify=stringify)
            assert none.actual_instance.value is None
    assert reader.get_xcom_entry("other", "t", "r1", ODD_KEY).actual_instance.value == "x"
    with pytest.raises(NotFoundException) as missing:
        reader.get_xcom_entry("etl", "transform", RUN, "return_value")  # map_index defaults to -1
    assert json.loads(missing.value.body) == {"detail": "XCom entry with key: `return_value` not found"}
    assert reader.get_xcom_entry("etl", "transform", RUN, "return_value", map_index=3).actual_instance.value == 30
    with pytest.raises(NotFoundException):
        reader.get_xcom_entry("~", "extract", RUN, "meta")  # '~' is no wildcard here, as in Airflow


def test_per_try_extension_reads_what_each_try_wrote(base_url: str) -> None:
    url = (f"{base_url}/api/v2/dags/etl/dagRuns/{quote(RUN, safe='')}/taskInstances/load/tries/"
           "{try_number}/xcomEntries/summary")
    assert _request("GET", url.format(try_number=1), READ)[1]["value"] == "v2"
    assert _request("GET", url.format(try_number=2), READ)[1]["value"] == "v3"
    status, body = _request("GET", url.format(try_number=3), READ)
    assert status == 404 and "try 3" in body["detail"]


# -- writes ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def written_run(data_settings: Settings) -> str:
    """A DAG run the view knows (it holds one XCom of it): creates there are allowed."""

    async def seed() -> None:
        async with XComBus(data_settings) as bus:
            receipt = await bus.task_instance("written", "w1", "seed").xcom_push("seed", 1)
            await bus.wait_visible([receipt.partition])

    asyncio.run(seed())
    return "w1"


def test_create_update_delete_are_audited_overrides_tasks_can_pull(
        writer: XComApi, reader: XComApi, data_settings: Settings, written_run: str, base_url: str) -> None:
    key = "cfg/threshold"  # a '/' in a key: sent as %2F, the rest of the path
    created = writer.create_xcom_entry("written", "api", written_run, XComCreateBody(
        key=key, value={"x": [1, 2], "n": None}))
    assert (created.key, created.value, created.task_id, created.map_index) == (key, {"x": [1, 2], "n": None},
                                                                                 "api", -1)
    assert reader.get_xcom_entry("written", "api", written_run, key).actual_instance.value == {"x": [1, 2], "n": None}
    with pytest.raises(UnprocessableEntityException, match="reserved"):
        writer.create_xcom_entry("written", "api", written_run, XComCreateBody(key=key, value={"__type__": 1}))
    with pytest.raises(ConflictException) as twice:
        writer.create_xcom_entry("written", "api", written_run, XComCreateBody(key=key, value=2))
    assert json.loads(twice.value.body)["detail"] == (
        f"The XCom with key: `{key}` with mentioned task instance already exists.")

    updated = writer.update_xcom_entry("written", "api", written_run, key, XComUpdateBody(value=5),
                                       _headers={"X-Xcombus-Reason": "raise the threshold"})
    assert updated.value == 5 and updated.timestamp > created.timestamp
    newest = reader.get_xcom_entries("written", "~", "~", order_by=["-timestamp"]).xcom_entries[0]
    assert (newest.key, newest.timestamp) == (key, updated.timestamp)  # the next GET shows it

    async def pull() -> Any:
        async with XComBus(data_settings) as bus:
            return await bus.task_instance("written", written_run, "downstream").xcom_pull(task_ids="api", key=key)

    assert asyncio.run(pull()) == 5  # read like a task-written value

    assert writer.delete_xcom_entry("written", "api", written_run, key,
                                    _headers={"X-Xcombus-Reason": "clean%20up%20%E2%9C%93"}) is None
    with pytest.raises(NotFoundException):
        reader.get_xcom_entry("written", "api", written_run, key)
    with pytest.raises(NotFoundException) as again:
        writer.delete_xcom_entry("written", "api", written_run, key)
    assert json.loads(again.value.body)["detail"] == (
        f"The XCom with key: `{key}` with mentioned task instance doesn't exist.")
    with pytest.raises(NotFoundException):
        writer.update_xcom_entry("written", "api", written_run, key, XComUpdateBody(value=6))

    events = asyncio.run(history(data_settings, "written", written_run, "api", key))
    assert [(e.kind, e.actor, e.reason) for e in events] == [
        ("override", "alice", "POST via the REST API v2"), ("override", "alice", "raise the threshold"),
        ("override", "alice", "clean up ✓")]
    assert [e.value for e in events] == [{"x": [1, 2], "n": None}, 5, None]
    url = (f"{base_url}/api/v2/dags/written/dagRuns/{written_run}/taskInstances/api/xcomHistory/"
           f"{quote(key, safe='')}")
    status, body = _request("GET", url, READ)
    assert status == 200 and [(v["kind"], v["actor"], v["reason"], v["value"]) for v in body["versions"]] == [
        ("override", "alice", "POST via the REST API v2", {"x": [1, 2], "n": None}),
        ("override", "alice", "raise the threshold", 5), ("override", "alice", "clean up ✓", None)]


def test_create_mapped_and_with_a_reason_field(writer: XComApi, written_run: str, base_url: str) -> None:
    created = writer.create_xcom_entry("written", "mapped", written_run,
                                       XComCreateBody(key="part", value="p2", map_index=2))
    assert created.map_index == 2
    assert writer.update_xcom_entry("written", "mapped", written_run, "part",
                                    XComUpdateBody(value="p2b", map_index=2)).value == "p2b"
    writer.delete_xcom_entry("written", "mapped", written_run, "part", map_index=2)
    url = f"{base_url}/api/v2/dags/written/dagRuns/{written_run}/taskInstances/reasoned/xcomEntries"
    status, body = _request("POST", url, WRITE, {"key": "k", "value": [1], "reason": "seeded by hand"})
    assert status == 201 and body["value"] == [1]
    status, body = _request("GET", url.replace("/xcomEntries", "/xcomHistory/k"), READ)
    assert body["versions"][-1]["reason"] == "seeded by hand"


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    (("nodag", "t", "w1"), {"key": "k", "value": 1}, 404, "The Dag with ID: `nodag` was not found"),
    (("written", "t", "norun"), {"key": "k", "value": 1}, 404, "Dag Run with ID: `norun` not found"),
    (("written", "t", "w1"), {"key": "k", "value": 1, "extra": 1}, 422, "extra_forbidden"),
    (("written", "t", "w1"), {"key": "k"}, 422, "missing"),
    (("written", "t", "w1"), {"key": "k", "value": {"a": [{"__classname__": "x"}]}}, 422, "reserved"),
    (("written", "t", "w1"), {"key": "k", "value": json.dumps({"__var": 1})}, 422, "reserved"),
    (("written", "t", "w1"), {"key": "k", "value": 1, "map_index": -2}, 422, "greater_than_equal"),
    (("written", "t", "w1"), {"key": "", "value": 1}, 422, "string_pattern_mismatch"),
    (("written", "t", "w1"), {"key": "k\u2028", "value": 1}, 400, "Couldn't serialise"),
    (("written", "t", "w1"), {"key": "k", "value": 1, "reason": " "}, 422, "reason"),
])
def test_create_refuses_what_airflow_refuses(written_run: str, base_url: str, path: tuple[str, str, str],
                                             body: dict[str, Any], status: int, words: str) -> None:
    dag, task, run = path
    url = f"{base_url}/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/xcomEntries"
    got, answer = _request("POST", url, WRITE, body)
    assert got == status and words in json.dumps(answer), answer


# -- auth --------------------------------------------------------------------------------------------
def test_a_read_token_reads_and_cannot_write(reader: XComApi, written_run: str) -> None:
    assert reader.get_xcom_entries("etl", "~", "~").total_entries == 9
    with pytest.raises(ForbiddenException) as refused:
        reader.create_xcom_entry("written", "api", written_run, XComCreateBody(key="nope", value=1))
    assert "read scope" in json.loads(refused.value.body)["detail"]
    with pytest.raises(ForbiddenException):
        reader.update_xcom_entry("written", "seed", written_run, "seed", XComUpdateBody(value=2))
    with pytest.raises(ForbiddenException):
        reader.delete_xcom_entry("written", "seed", written_run, "seed")
    with pytest.raises(NotFoundException):  # nothing was written
        reader.get_xcom_entry("written", "api", written_run, "nope")


def test_no_token_is_a_401_and_an_unknown_one_a_403(base_url: str) -> None:
    with pytest.raises(UnauthorizedException) as missing:
        xcom_api(base_url, None).get_xcom_entries("~", "~", "~")
    assert json.loads(missing.value.body) == {"detail": "Not authenticated"}
    with pytest.raises(ForbiddenException) as unknown:
        xcom_api(base_url, WRITE + "x").get_xcom_entry("etl", "extract", RUN, "meta")
    assert WRITE not in unknown.value.body
    # XCOMBUS_API_TOKEN still works, as a read token.
    assert xcom_api(base_url, TOKEN).get_xcom_entries("etl", "~", "~").total_entries == 9
    with pytest.raises(ForbiddenException):
        xcom_api(base_url, TOKEN).delete_xcom_entry("etl", "extract", RUN, "meta")


def test_auth_token_as_airflows_simple_auth_manager(base_url: str, written_run: str) -> None:
    url = f"{base_url}/auth/token"
    status, body = _request("POST", url, None, {"username": "alice", "password": PASSWORD})
    assert (status, body) == (201, {"access_token": WRITE})
    form = urllib.request.Request(url, data=f"username=alice&password={PASSWORD}".encode(), method="POST",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(form, timeout=30) as response:
        assert response.status == 201 and json.loads(response.read()) == {"access_token": WRITE}
    assert _request("POST", url, None, {"username": "alice", "password": "nope"}) == (
        401, {"detail": "Invalid credentials"})
    assert _request("POST", url, None, {"username": "bob", "password": PASSWORD})[0] == 401
    assert _request("POST", url, None, {"username": "", "password": ""})[0] == 400
    assert _request("POST", url, None, {"username": "alice"})[0] == 422
    plain = urllib.request.Request(url, data=b"alice", method="POST", headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as unsupported:
        urllib.request.urlopen(plain, timeout=30)
    assert unsupported.value.code == 415
    # The README's flow: log in, then use the token with the client.
    api = xcom_api(base_url, body["access_token"])
    assert api.create_xcom_entry("written", "login", written_run, XComCreateBody(key="k", value=1)).value == 1


def test_a_server_without_tokens_reads_openly_and_refuses_writes(data_settings: Settings,
                                                                 written_run: str) -> None:
    with live_server(data_settings) as url:
        api = xcom_api(url, None)
        assert api.get_xcom_entries("etl", "~", "~").total_entries == 9
        with pytest.raises(ForbiddenException) as refused:
            api.create_xcom_entry("written", "api", written_run, XComCreateBody(key="open", value=1))
        detail = json.loads(refused.value.body)["detail"]
        assert "read-only" in detail and "XCOMBUS_API_TOKENS" in detail


# -- OpenAPI ------------------------------------------------------------------------------------------
def test_openapi_document_has_v1_v2_and_the_extensions(base_url: str) -> None:
    from openapi_spec_validator import validate

    spec = _get_json(f"{base_url}/openapi.json", None)
    validate(spec)
    ops = {op["operationId"]: path for path, item in spec["paths"].items() for op in item.values()}
    prefix = "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}"
    assert ops["get_xcom_entries_v2"] == ops["create_xcom_entry_v2"] == f"{prefix}/xcomEntries"
    assert ops["get_xcom_entry_v2"] == ops["update_xcom_entry_v2"] == ops["delete_xcom_entry_v2"] == \
        f"{prefix}/xcomEntries/{{xcom_key}}"
    assert ops["xcombus_get_xcom_history"] == f"{prefix}/xcomHistory/{{xcom_key}}"
    assert ops["xcombus_get_xcom_entry_of_try"] == f"{prefix}/tries/{{try_number}}/xcomEntries/{{xcom_key}}"
    assert ops["get_xcom_entries"].startswith("/api/v1/") and ops["create_token"] == "/auth/token"
    listing = spec["paths"][f"{prefix}/xcomEntries"]["get"]
    params = {p["name"]: p for p in listing["parameters"]}
    assert params["limit"]["schema"]["default"] == 50 and "array" in json.dumps(params["order_by"]["schema"])
    assert listing["security"] == [{"OAuth2PasswordBearer": []}, {"HTTPBearer": []}]
    assert set(spec["components"]["securitySchemes"]) == {"BearerToken", "OAuth2PasswordBearer", "HTTPBearer"}


@pytest.fixture(scope="module")
def fuzz_url(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(kafka, tmp_path_factory.mktemp("http_v2_fuzz"))
    populate(settings)
    materializer = start_materializer(settings)
    try:
        with live_server(settings, extra_env=TOKENS_ENV, secrets=SECRETS) as url:
            yield url
    finally:
        stop_process(materializer)


@pytest.mark.parametrize("pinned", [False, True], ids=["generated-ids", "existing-ids"])
def test_openapi_fuzzing_of_v2_finds_no_5xx(fuzz_url: str, tmp_path: Path, pinned: bool) -> None:
    """schemathesis over /api/v2 and /auth/token as over /api/v1 (test_http.py), with a
    write token, so creates, updates and deletes run too: no 5xx, only documented answers."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(PINNED_FUZZ if pinned else "")
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color",
        "run", f"{fuzz_url}/openapi.json", "--checks", "all", "--max-examples", "30",
        "--seed", "20261203", "--header", f"Authorization: Bearer {WRITE}", "--workers", "1",
        "--generation-codec", "ascii", "--generation-database", "none", "--request-timeout", "30",
        "--include-path-regex", "^/(api/v2|auth)/",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path,
                            stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20000:]
    assert "8 selected / " in output and " passed" in output


# -- raw HTTP, where the client checks inputs before sending -------------------------------------------
def _request(method: str, url: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        assert error.headers["content-type"].startswith("application/json")
        return error.code, json.loads(error.read())


def _get_json(url: str, token: str | None) -> Any:
    status, body = _request("GET", url, token)
    assert status == 200, body
    return body
