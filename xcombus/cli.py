"""The ``xcombus`` command line.

Built on click (subcommands, typed options and help for free); every command reads the
same ``XCOMBUS_*`` settings as the library, and options override them. Every command maps
errors to exit codes through :func:`xcombus.process.exit_codes` (1: failed, with the
error's message; 2: bad configuration or usage); ``materialize`` and ``tail`` run the
long-running processes of :mod:`xcombus.services`. ``set``, ``delete`` and ``revert`` write
audited overrides (a reason is required: without one the command is a usage error and
publishes nothing).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from .limits import MAX_PAGE
from .process import configure_logging, exit_codes
from .settings import Settings

if TYPE_CHECKING:
    from .audit import AuditEvent
    from .broker import LocalBroker
    from .records import Receipt

F = TypeVar("F", bound=Callable[..., Any])

# Values printed as JSON: msgspec's JSON covers datetimes, sets, decimals, dataclasses...;
# anything else is shown by its repr rather than failing the command.
_json = msgspec.json.Encoder(enc_hook=repr)


_errors = exit_codes("xcombus")


def _ti_options(fn: F) -> F:
    for option in reversed([
        click.option("--dag-id", required=True, help="DAG id"),
        click.option("--run-id", required=True, help="DAG run id"),
        click.option("--task-id", required=True, help="task id"),
    ]):
        fn = option(fn)
    return fn


@click.group()
@click.version_option(package_name="xcombus")
def main() -> None:
    """xcombus: Airflow-style XComs on a Kafka event bus."""


# -- broker -------------------------------------------------------------------------------
@main.group()
def broker() -> None:
    """Run a local single-node Apache Kafka (KRaft) for tests and the demo."""


def _broker(port: int | None, home: str | None) -> LocalBroker:
    from .broker import LocalBroker

    return LocalBroker(home, port=port)


_port = click.option("--port", type=int, default=None,
                     help="listener port [XCOMBUS_BROKER_PORT or 9092]")
_home = click.option("--home", default=None,
                     help="data/log dir [XCOMBUS_BROKER_HOME or ~/.cache/xcombus/broker-PORT]")


@broker.command("start")
@_port
@_home
@click.option("--timeout", type=float, default=90.0, show_default=True, help="seconds to wait for the broker")
@_errors
def broker_start(port: int | None, home: str | None, timeout: float) -> None:
    """Start the broker (fetching its jars with Maven once) and wait until it answers."""
    b = _broker(port, home)
    pid = b.start(timeout=timeout)
    click.echo(f"Kafka {b.kafka_version} is up at {b.bootstrap_servers} (pid {pid}, log {b.log_file})")


@broker.command("stop")
@_port
@_home
@_errors
def broker_stop(port: int | None, home: str | None) -> None:
    """Stop the broker started with 'xcombus broker start' (only that one)."""
    b = _broker(port, home)
    click.echo("stopped" if b.stop() else "not running")


@broker.command("status")
@_port
@_home
@_errors
def broker_status(port: int | None, home: str | None) -> None:
    """Print the broker's state as JSON; exit 1 when it is not running."""
    status = _broker(port, home).status()
    click.echo(json.dumps(status))
    sys.exit(0 if status["running"] else 1)


# -- materializer -------------------------------------------------------------------------
@main.command()
@click.option("--view", default=None, help="view file [XCOMBUS_VIEW_PATH or xcombus.db]")
@click.option("--topic", default=None, help="topic [XCOMBUS_TOPIC or xcombus.xcom]")
@click.option("--log-level", default="INFO", show_default=True)
@exit_codes("xcombus materialize")
def materialize(view: str | None, topic: str | None, log_level: str) -> None:
    """Fold the topic into the SQLite view until SIGTERM/SIGINT."""
    from .services import materialize_until_stopped

    configure_logging(log_level)
    asyncio.run(materialize_until_stopped(Settings.from_env(view_path=view, topic=topic)))


# -- push / pull ----------------------------------------------------------------------------
@main.command()
@_ti_options
@click.option("--map-index", type=int, default=-1, show_default=True)
@click.argument("key")
@click.argument("value_json")
@_errors
def push(dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value_json: str) -> None:
    """Push VALUE_JSON under KEY; print the receipt (topic, partition, offset) as JSON."""
    value = _decode_value(value_json)

    async def push_one() -> Receipt:
        from .bus import XComBus

        async with XComBus(Settings.from_env()) as bus:
            return await bus.task_instance(dag_id, run_id, task_id, map_index).xcom_push(key, value)

    receipt = asyncio.run(push_one())
    click.echo(_json.encode(receipt._asdict()).decode())


# -- overrides: manual changes, audited ----------------------------------------------------
def _checked(check: Callable[[object], str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that runs an events.validate_* check: a bad value is a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from .errors import XComIdentifierError

        if value is None:
            return None
        try:
            return check(value)
        except XComIdentifierError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _override_options(fn: F) -> F:
    from .events import validate_actor, validate_reason

    for option in reversed([
        click.option("--reason", required=True, callback=_checked(validate_reason),
                     help="why (required; history shows it): one line, e.g. a ticket"),
        click.option("--actor", default=None, callback=_checked(validate_actor),
                     help="who makes the change [XCOMBUS_ACTOR, else the OS user]"),
    ]):
        fn = option(fn)
    return fn


def _override(action: str, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, *,
              actor: str | None, reason: str, value: Any = None, to_offset: int | None = None) -> None:
    """Publish one override (``action``: set, delete, revert) and print, as one JSON line,
    where it landed and what it records: try, actor, reason and the version it replaced."""

    async def publish() -> dict[str, Any]:
        from .bus import XComBus
        from .errors import XComBusError
        from .events import EventDecodeError, Override, TaskInstanceKey, decode_event
        from .fetch import EventFetcher

        settings = Settings.from_env()
        ti = TaskInstanceKey(dag_id, run_id, task_id, map_index)
        async with XComBus(settings) as bus:
            if action == "set":
                receipt = await bus.set_xcom(ti, key, value, reason=reason, actor=actor)
            elif action == "delete":
                receipt = await bus.delete_xcom(ti, key, reason=reason, actor=actor)
            else:
                assert to_offset is not None
                receipt = await bus.revert_xcom(ti, key, to_offset=to_offset, reason=reason, actor=actor)
        out: dict[str, Any] = {**receipt._asdict(), "kind": "override", "action": action}
        if to_offset is not None:
            out["reverted_to"] = (receipt.partition, to_offset)
        # The event itself says what the bus recorded (the actor it chose, the version the
        # view held): read it back rather than guess.
        try:
            async with EventFetcher(settings) as fetcher:
                raw = await fetcher.fetch(receipt.partition, receipt.offset)
            event = decode_event(raw.value)
        except (XComBusError, EventDecodeError) as exc:
            # The override is durable already: say so rather than fail the command.
            click.echo(f"xcombus: the override is at partition {receipt.partition} offset "
                       f"{receipt.offset}, but reading it back failed ({exc}); "
                       "`xcombus history` shows it", err=True)
            return out
        if isinstance(event, Override):
            out.update(try_number=event.try_number, actor=event.actor, reason=event.reason,
                       replaces=event.replaces)
        return out

    click.echo(_json.encode(asyncio.run(publish())).decode())


def _decode_value(value_json: str) -> Any:
    try:
        return msgspec.json.decode(value_json)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="VALUE_JSON") from exc


@main.command("set")
@_ti_options
@click.option("--map-index", type=int, default=-1, show_default=True)
@click.argument("key")
@click.argument("value_json")
@_override_options
@_errors
def set_xcom(dag_id: str, run_id: str, task_id: str, map_index: int, key: str, value_json: str,
             reason: str, actor: str | None) -> None:
    """Set KEY to VALUE_JSON by hand: an override, applied in log order like a push and shown
    in history with the actor, the reason and the version it replaced. Prints where it
    landed and what it replaced as JSON."""
    _override("set", dag_id, run_id, task_id, map_index, key, actor=actor, reason=reason,
              value=_decode_value(value_json))


@main.command("delete")
@_ti_options
@click.option("--map-index", type=int, default=-1, show_default=True)
@click.argument("key")
@_override_options
@_errors
def delete_xcom(dag_id: str, run_id: str, task_id: str, map_index: int, key: str, reason: str,
                actor: str | None) -> None:
    """Delete KEY by hand (an audited override); exit 1 when the view has no such XCom."""
    _override("delete", dag_id, run_id, task_id, map_index, key, actor=actor, reason=reason)


@main.command("revert")
@_ti_options
@click.option("--map-index", type=int, default=-1, show_default=True)
@click.argument("key")
@click.option("--to", "to_offset", type=click.IntRange(0), required=True, metavar="OFFSET",
              help="the offset of the version to restore, as `xcombus history` lists it")
@_override_options
@_errors
def revert_xcom(dag_id: str, run_id: str, task_id: str, map_index: int, key: str, to_offset: int,
                reason: str, actor: str | None) -> None:
    """Re-publish an earlier version of KEY (the event at offset --to of its task
    instance's partition) as an override; exit 1 when that offset is no version of KEY."""
    _override("revert", dag_id, run_id, task_id, map_index, key, actor=actor, reason=reason,
              to_offset=to_offset)


@main.command()
@_ti_options
@click.option("--key", default="return_value", show_default=True)
@click.option("--map-index", type=int, default=None,
              help="one map index; default: every map index (a list when several), "
                   "or -1 (the unmapped instance) with --try")
@click.option("--try", "try_number", type=click.IntRange(1), default=None, metavar="N",
              help="what try N of the task instance last pushed under KEY, also when a later "
                   "try cleared it; reads one map index (--map-index, default -1)")
@click.option("--eventual", is_flag=True, help="read the view as it is, without waiting for it")
@_errors
def pull(dag_id: str, run_id: str, task_id: str, key: str, map_index: int | None,
         try_number: int | None, eventual: bool) -> None:
    """Print an XCom's value as JSON; exit 1 when there is none."""
    if try_number is not None and map_index is None:
        map_index = -1  # a per-try read finds versions by identity: it cannot list map indexes

    async def pull_values() -> list[Any]:
        from .bus import XComBus

        async with XComBus(Settings.from_env()) as bus:
            records = await bus.read(dag_id, run_id, [task_id], key,
                                     map_indexes=None if map_index is None else [map_index],
                                     consistency="eventual" if eventual else "strong",
                                     try_number=try_number)
            return [bus.deserialize(r) for r in records]

    values = asyncio.run(pull_values())
    if not values:
        where = f"{dag_id}/{run_id}/{task_id}" + ("" if map_index is None else f"[{map_index}]")
        of_try = "" if try_number is None else f" from try {try_number}"
        click.echo(f"xcombus: no XCom {key!r} for {where}{of_try}", err=True)
        sys.exit(1)
    click.echo(_json.encode(values[0] if len(values) == 1 else values).decode())


_MOMENT = click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"])


@main.command("ls")
@click.option("--dag-id")
@click.option("--run-id")
@click.option("--task-id")
@click.option("--key")
@click.option("--map-index", type=int)
@click.option("--since", type=_MOMENT, help="pushed at or after this UTC time")
@click.option("--until", type=_MOMENT, help="pushed before this UTC time")
@click.option("--try", "try_number", type=click.IntRange(1), metavar="N",
              help="only rows written by try N (an override's row: its task instance's current try)")
@click.option("--order-by", type=click.Choice(["identity", "timestamp"]), default="identity",
              show_default=True)
@click.option("--desc", is_flag=True, help="newest / last first")
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@_errors
def list_xcoms(dag_id: str | None, run_id: str | None, task_id: str | None, key: str | None,
               map_index: int | None, since: Any, until: Any, try_number: int | None, order_by: Any,
               desc: bool, limit: int, offset: int, as_json: bool) -> None:
    """List materialized XComs with light values (the backend's orm_deserialize_value)."""
    from datetime import UTC

    from .lookup import XComLookup

    with XComLookup(Settings.from_env()) as lookup:
        entries = lookup.entries(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key,
                                 map_index=map_index, since=since and since.replace(tzinfo=UTC),
                                 until=until and until.replace(tzinfo=UTC), order_by=order_by,
                                 descending=desc, limit=limit, offset=offset, try_number=try_number)
    if as_json:
        for e in entries:
            click.echo(_json.encode(e).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in ("dag_id", "run_id", "task_id", "map_index", "key", "try", "value", "pushed (UTC)",
                   "partition:offset"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(e.dag_id, e.run_id, e.task_id, str(e.map_index), e.key, str(e.try_number),
                      e.value if isinstance(e.value, str) else _json.encode(e.value).decode(),
                      e.timestamp.strftime("%Y-%m-%d %H:%M:%S.%f"), f"{e.partition}:{e.offset}")
    Console().print(table)


# -- audit: read the topic itself ---------------------------------------------------------
@main.command()
@_ti_options
@click.option("--key", default="return_value", show_default=True)
@click.option("--map-index", type=int, default=-1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@_errors
def history(dag_id: str, run_id: str, task_id: str, key: str, map_index: int, as_json: bool) -> None:
    """Every version of one XCom with the clears in between, in log order: its kind (push,
    clear, override, fenced: an older try's event, kept and never applied), try, actor and
    reason (overrides) and the version an override replaced. Read through the view's
    version index when a view is at hand, else from the topic."""
    from .audit import history as read_history

    events = asyncio.run(read_history(Settings.from_env(), dag_id, run_id, task_id, key, map_index))
    if as_json:
        for event in events:
            click.echo(_json.encode(event).decode())
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # No vertical rules, the fixed columns never wrap, "by" (the actor of an override, else
    # the producer) is cut: an 80-column terminal keeps one line per event for short values;
    # --json has every field in full.
    table = Table(title=f"history of {dag_id}/{run_id}/{task_id}[{map_index}] {key!r}",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("at", no_wrap=True)  # partition:offset
    for column in ("kind", "try", "time (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("by", no_wrap=True, overflow="ellipsis", max_width=14)
    table.add_column("reason", overflow="fold", ratio=1)
    table.add_column("value", overflow="fold", ratio=1)
    for e in events:
        reason = e.reason or ""
        if e.replaces is not None:
            reason += f" (replaces {e.replaces[0]}:{e.replaces[1]})"
        table.add_row(f"{e.partition}:{e.offset}", e.kind, str(e.try_number or ""),
                      e.timestamp.strftime("%Y-%m-%d %H:%M:%S") if e.timestamp else "",
                      e.actor or e.producer or "", reason, _history_value(e))
    Console().print(table)
    if not events:
        click.echo(f"xcombus: no event for {key!r} of {dag_id}/{run_id}/{task_id}[{map_index}]", err=True)
        sys.exit(1)


def _history_value(event: AuditEvent) -> str:
    """The value column of one history row: empty for a clear (fenced or not), "(deleted)"
    for an override without a value."""
    if event.kind == "clear" or event.key is None:
        return ""
    if event.kind == "override" and event.codec is None:
        return "(deleted)"
    return _json.encode(event.value).decode()


@main.command()
@click.option("--dag-id")
@click.option("--run-id")
@click.option("--task-id")
@click.option("--key")
@click.option("--from-beginning", is_flag=True, help="start at offset 0, not at the end")
@click.option("--limit", type=click.IntRange(1), help="stop after this many events")
@exit_codes("xcombus tail")
def tail(dag_id: str | None, run_id: str | None, task_id: str | None, key: str | None,
         from_beginning: bool, limit: int | None) -> None:
    """Follow the topic: one JSON line per event, until Ctrl-C."""
    from .services import tail_until_stopped

    asyncio.run(tail_until_stopped(Settings.from_env(), limit=limit, from_beginning=from_beginning,
                                   dag_id=dag_id, run_id=run_id, task_id=task_id, key=key))


def _parse_offsets(text: str | None) -> dict[int, int] | None:
    if text is None:
        return None
    try:
        pairs = [item.split(":") for item in text.split(",") if item.strip()]
        return {int(p): int(o) for p, o in pairs}
    except ValueError:
        raise click.BadParameter("use PARTITION:OFFSET,... e.g. 0:120,1:98",
                                 param_hint="--until-offsets") from None


@main.command()
@click.option("--into", required=True, type=click.Path(dir_okay=False), help="the new view file")
@click.option("--until", "until", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f",
                                                      "%Y-%m-%d %H:%M:%S"]),
              help="the view as it was at this UTC moment")
@click.option("--until-offsets", help="PARTITION:OFFSET,... (first offsets not applied)")
@click.option("--swap", is_flag=True, help="then replace the live view (XCOMBUS_VIEW_PATH) with it")
@_errors
def rebuild(into: str, until: Any, until_offsets: str | None, swap: bool) -> None:
    """Build a view from offset 0 of the topic, with progress; optionally swap it in."""
    from datetime import UTC

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .rebuild import rebuild as run_rebuild
    from .rebuild import swap as run_swap

    if until is not None and until_offsets is not None:
        raise click.UsageError("give --until or --until-offsets, not both")
    settings = Settings.from_env()
    with Progress(TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn()) as progress:
        job = progress.add_task("rebuild", total=None, rate="")
        started = time.perf_counter()

        def on_progress(done: int, total: int) -> None:
            rate = done / max(1e-9, time.perf_counter() - started)
            progress.update(job, completed=done, total=total, rate=f"{rate:,.0f} events/s")

        summary = asyncio.run(run_rebuild(settings, into, until=until.replace(tzinfo=UTC) if until else None,
                                   until_offsets=_parse_offsets(until_offsets), on_progress=on_progress))
    click.echo(f"rebuilt {summary.path}: {summary.events} events -> {summary.rows} rows, "
               f"{summary.dead_letters} dead letters, offsets {summary.offsets}, "
               f"{summary.seconds:.2f}s ({summary.events / max(summary.seconds, 1e-9):,.0f} events/s)")
    if swap:
        run_swap(into, settings.view_path)
        click.echo(f"swapped into {settings.view_path}")


@main.command()
@click.argument("a", type=click.Path(exists=True, dir_okay=False))
@click.argument("b", type=click.Path(exists=True, dir_okay=False))
@exit_codes("xcombus", failed=2)  # exit 1 means "the views differ"
def verify(a: str, b: str) -> None:
    """Compare two views row for row; exit 1 and list the differences if they differ."""
    from .rebuild import verify as run_verify

    result = run_verify(a, b)
    if result.same:
        click.echo(f"identical: {result.rows_a} rows at offsets {result.offsets_a}")
        return
    click.echo(f"different: {result.rows_a} rows in A, {result.rows_b} in B")
    for line in [*result.differences, *result.version_differences]:
        click.echo(f"  {line}")
    sys.exit(1)


@main.group()
def deadletters() -> None:
    """Events the materializer could not apply: list them, retry them after a fix."""


@deadletters.command("list")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@_errors
def deadletters_list(limit: int, as_json: bool) -> None:
    """List dead letters (partition, offset, reason, the raw key)."""
    from .view import ViewReader

    reader = ViewReader(Settings.from_env().view_path)
    try:
        dead = reader.dead_letters(limit=limit)
    finally:
        reader.close()
    for d in dead:
        key = d.key.decode(errors="replace") if d.key is not None else None
        if as_json:
            click.echo(_json.encode({"partition": d.partition, "offset": d.offset, "key": key,
                                     "value_bytes": None if d.value is None else len(d.value),
                                     "reason": d.reason}).decode())
        else:
            click.echo(f"{d.partition}:{d.offset}  key={key!r}  {d.reason}")


@deadletters.command("retry")
@_errors
def deadletters_retry() -> None:
    """Re-apply dead letters that now decode (stop the materializer first)."""
    from .deadletters import retry_dead_letters

    summary = asyncio.run(retry_dead_letters(Settings.from_env()))
    click.echo(_json.encode(summary).decode())


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@_errors
def serve(host: str, port: int) -> None:
    """Serve the read-only HTTP API (Airflow's REST shape) and the web page."""
    from .web.app import serve as run_server

    run_server(Settings.from_env(), host=host, port=port)


@main.command()
@_errors
def doctor() -> None:
    """Check the broker, the topic, the view and the backend in this environment."""
    from .doctor import run_checks

    checks = asyncio.run(run_checks(Settings.from_env()))
    for check in checks:
        mark = click.style(" ok ", fg="green") if check.ok else click.style("FAIL", fg="red")
        click.echo(f"[{mark}] {check.name:<8} {check.detail}")
    sys.exit(0 if all(c.ok for c in checks) else 1)


@main.group()
def topic() -> None:
    """Manage the XCom topic."""


@topic.command("create")
@click.option("--partitions", type=click.IntRange(1), default=None, help="[XCOMBUS_PARTITIONS or 6]")
@click.option("--replication-factor", type=click.IntRange(1), default=None,
              help="[XCOMBUS_REPLICATION_FACTOR or 1]")
@click.option("--retention-ms", type=click.IntRange(-1), default=None, help="-1 keeps events forever")
@_errors
def topic_create(partitions: int | None, replication_factor: int | None, retention_ms: int | None) -> None:
    """Create the topic (cleanup.policy=delete) unless it exists; print its layout."""
    from .topic import describe_topic, ensure_topic

    settings = Settings.from_env(partitions=partitions, replication_factor=replication_factor,
                                 retention_ms=retention_ms)
    asyncio.run(ensure_topic(settings))
    info = asyncio.run(describe_topic(settings))
    assert info is not None
    click.echo(_json.encode({"topic": info.name, "partitions": info.partitions,
                             "cleanup.policy": info.configs.get("cleanup.policy"),
                             "retention.ms": info.configs.get("retention.ms")}).decode())


# -- demo -----------------------------------------------------------------------------------
@main.command()
@click.option("--keep-broker", is_flag=True, help="leave a broker the demo started running")
@exit_codes("xcombus demo")
def demo(keep_broker: bool) -> None:
    """Run extract -> transform (mapped x4) -> load in separate processes through Kafka."""
    from .demo import run_demo

    sys.exit(run_demo(keep_broker=keep_broker))


if __name__ == "__main__":
    main()
