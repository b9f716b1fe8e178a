"""Scenario 1: kill -9 the materializer at random instants under load from several
producer processes, tries retried in the load (zombie pushes of older tries from other
processes) and overrides (sets and deletes by hand) among them; the view must equal the
acknowledged events folded by the fencing rule, applied exactly once, with every fenced
push and every override in the version index, at every instant and after a rebuild."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from tests.faults.workload import ACTOR, SOAK, Expected, acknowledged, expected_view
from tests.helpers import DrainedPopen, settings_env, start_materializer, stop_process
from xcombus import Settings, XComBus
from xcombus.consistency import EndOffsets
from xcombus.rebuild import rebuild, verify
from xcombus.store import KIND_OVERRIDE, KIND_PUSH
from xcombus.view import ViewReader

PRODUCERS = 4
PUSHES = 50_000 if SOAK else 4_000      # per producer: 200k in all for the soak form
RETRIED = 500 if SOAK else 40           # per producer: retried task instances whose try 1 it runs
KILLS = 25 if SOAK else 6


class Snapshot(NamedTuple):
    """What a view holds at one instant, read in one transaction."""

    offsets: dict[int, int]
    applied: int
    #: XCom identity -> (value, try, partition, offset).
    rows: dict[tuple[Any, ...], tuple[Any, int, int, int]]
    tries: dict[tuple[Any, ...], int]
    fenced_pushes: set[tuple[int, int]]
    fenced_clears: set[tuple[int, int]]
    #: The override index rows: ``(partition, offset)`` -> (try, fenced, actor).
    overrides: dict[tuple[int, int], tuple[int, int, str | None]]
    indexed: int


def snapshot(path: str) -> Snapshot | None:
    """The view's state, or None while it has no schema yet."""
    if not Path(path).exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("BEGIN")
        offsets = dict(db.execute("SELECT kafka_partition, next_offset FROM offsets"))
        applied = db.execute("SELECT coalesce(sum(applied_events), 0) FROM offsets").fetchone()[0]
        rows = {tuple(r[:5]): (msgspec.json.decode(r[5]), *r[6:]) for r in db.execute(
            "SELECT dag_id, run_id, task_id, map_index, key, value, try_number, kafka_partition, kafka_offset "
            "FROM xcom")}
        tries = {tuple(r[:4]): r[4] for r in db.execute(
            "SELECT dag_id, run_id, task_id, map_index, try_number FROM ti_try")}
        fenced: dict[bool, set[tuple[int, int]]] = {True: set(), False: set()}
        for kind, partition, offset in db.execute(
                "SELECT kind, kafka_partition, kafka_offset FROM xcom_version WHERE fenced = 1"):
            fenced[kind == KIND_PUSH].add((partition, offset))
        overrides = {(r[0], r[1]): tuple(r[2:]) for r in db.execute(
            "SELECT v.kafka_partition, v.kafka_offset, v.try_number, v.fenced, n.name FROM xcom_version v "
            "LEFT JOIN name n ON n.id = v.actor_id WHERE v.kind = ?", (KIND_OVERRIDE,))}
        indexed = db.execute("SELECT count(*) FROM xcom_version").fetchone()[0]
        db.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None  # the materializer is creating the file
        if "readonly database" in str(exc):
            return None  # a killed writer's log awaits replay by the next one (a read-only reader can't)
        raise
    finally:
        db.close()
    return Snapshot(offsets, applied, rows, tries, fenced[True], fenced[False], overrides, indexed)


def differences(seen: Snapshot, expected: Expected) -> dict[str, int]:
    """How a view's state departs from the oracle's, by kind (zero everywhere: none)."""
    rows, want = seen.rows, expected.rows
    return {
        "lost": sum(1 for k in want if k not in rows),
        "stale": sum(1 for k, v in want.items() if k in rows and rows[k] != v),
        "extra": sum(1 for k in rows if k not in want),
        # A fenced push as a row: a zombie's value visible to pulls.
        "fenced_visible": sum(1 for row in rows.values() if row[2:] in expected.fenced_pushes),
        "tries": len(set(seen.tries.items()) ^ set(expected.tries.items())),
        "fenced_pushes": len(seen.fenced_pushes ^ expected.fenced_pushes),
        "fenced_clears": len(seen.fenced_clears ^ expected.fenced_clears),
        # One index row per override, never fenced, at the try current where it landed.
        "overrides": len(set(seen.overrides.items()) ^ {(position, (t, 0, ACTOR))
                                                        for position, t in expected.overrides.items()}),
        # Every event is a current row or an index row, once; an override is indexed
        # at once, also while it is its XCom's row.
        "index": seen.indexed + sum(1 for row in rows.values() if row[2:] not in seen.overrides)
        - expected.events,
        "applied": seen.applied - expected.events,
    }


def applying(path: str, snapshots: list[Snapshot], producers: list[subprocess.Popen[bytes]],
             outs: list[Path]) -> None:
    """Until the view's offsets move past the last of ``snapshots`` (the materializer
    committed a batch), or the producers are done and the view holds every event they wrote;
    every new state of the view seen meanwhile is added to ``snapshots``."""
    before = snapshots[-1].offsets if snapshots else {}
    deadline, written = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        seen = snapshot(path)
        if seen is not None and seen.offsets != before:
            snapshots.append(seen)
            return
        if written is None and all(p.poll() is not None for p in producers):
            written = len(acknowledged(outs))
        if written is not None and sum(before.values()) >= written:
            return
        time.sleep(0.05)
    raise AssertionError(f"the materializer applied nothing for 120 s from {before}")


async def test_view_survives_repeated_kill_9(settings: Settings, tmp_path: Path) -> None:
    async with XComBus(settings):  # create the topic before the producers race to
        pass
    env = settings_env(settings)
    outs = [tmp_path / f"acks{i}.jsonl" for i in range(PRODUCERS)]
    sync = tmp_path / "sync"
    sync.mkdir()
    producers = [subprocess.Popen([sys.executable, "-m", "tests.faults.workload", str(out), "--pushes",
                                   str(PUSHES), "--seed", str(i), "--retried", str(RETRIED), "--producers",
                                   str(PRODUCERS), "--sync", str(sync)], env=env)
                 for i, out in enumerate(outs)]
    rng = random.Random(7)
    kills = 0
    snapshots: list[Snapshot] = []  # the view as the kills found it, and between them

    def incarnation() -> DrainedPopen:
        # Each in a group of its own: a killed member stays in its group until its session
        # times out (aiokafka's default: 10 s), and until then a new member of that group is
        # assigned nothing, so every kill would find a materializer that applies nothing.
        # Where to resume is the view's business (its offsets), not the group's.
        return start_materializer(settings, env | {"XCOMBUS_GROUP_ID": f"{settings.topic}.{kills}"})

    mat = incarnation()
    try:
        while kills < KILLS:
            if kills % 3 == 0:  # at a random instant, most likely while it starts
                time.sleep(rng.uniform(0.3, 1.5))
            else:  # while it applies: a random instant after it committed a batch
                applying(settings.view_path, snapshots, producers, outs)
                time.sleep(rng.uniform(0, 0.5))
            seen = snapshot(settings.view_path)
            if seen is not None:
                snapshots.append(seen)
            mat.kill()  # SIGKILL: no cleanup, no last commit
            mat.wait(30)
            kills += 1
            mat = incarnation()
        for p in producers:
            assert p.wait(600) == 0
        async with XComBus(settings) as bus:
            await bus.wait_visible(range(settings.partitions), timeout=120)
    finally:
        stop_process(mat)
        for p in producers:
            p.kill()
    events = acknowledged(outs)
    expected = expected_view(events)
    ends = EndOffsets(settings)
    try:
        end = await ends.get(range(settings.partitions), 10)
    finally:
        await ends.aclose()
    live = snapshot(settings.view_path)
    assert live is not None
    reader = ViewReader(settings.view_path)
    try:
        applied = reader.applied_events()
        dead = reader.dead_letters()
        # The index through the reader's API: each retried XCom's versions are its pushes, its
        # overrides and its task instance's clears, fenced or not, as the log has them.
        versions_wrong = 0
        for ti, history in expected.history.items():
            if ti[0] != "retry":
                continue
            for key in {k for _, _, _, k, _, _ in history if k is not None}:
                want = [(p, o, kind, t, f) for p, o, kind, k, t, f in history if kind == "clear" or k == key]
                dag_id, run_id, task_id, map_index = ti
                got = [(v.partition, v.offset, v.kind, v.try_number, v.fenced)
                       for v in reader.versions(dag_id, run_id, task_id, map_index, key)]
                versions_wrong += got != want
    finally:
        reader.close()
    zombies = {(e["partition"], e["offset"]) for e in events if e.get("zombie") and e["kind"] == "push"}
    zombie_clears = {(e["partition"], e["offset"]) for e in events if e.get("zombie") and e["kind"] == "clear"}
    retried = [ti for ti in expected.history if ti[0] == "retry"]
    # The overrides acknowledged, by (dag, set or delete); the sets that took a try above 1,
    # and those that landed after the next try of their sender's started (the oracle gives
    # them a try above their sender's).
    sent = {(e["partition"], e["offset"]): e for e in events if e["kind"] == "override"}
    overrides = {(dag, delete): sum(1 for e in sent.values() if e["ti"][0] == dag and (e["value"] is None) == delete)
                 for dag in ("load", "retry") for delete in (False, True)}
    sets = {position: t for position, t in expected.overrides.items() if sent[position]["value"] is not None}
    sets_above_1 = sum(1 for t in sets.values() if t > 1)
    overtaken = sum(1 for position, t in sets.items() if t > sent[position]["sender_try"])
    refused = sum(1 for out in outs for line in out.read_text().splitlines() if json.loads(line)["kind"] == "refused")
    print(f"kills={kills} acknowledged={len(events)} log={sum(end.values())} rows={len(live.rows)} "
          f"retried={len(retried)} at_try_3={sum(1 for t in expected.tries.values() if t == 3)} "
          f"zombie_pushes={len(zombies)} fenced_pushes={len(live.fenced_pushes)} zombie_clears={len(zombie_clears)} "
          f"overrides={overrides} sets_above_try_1={sets_above_1} sets_overtaken={overtaken} refused={refused} "
          f"snapshots={len(snapshots)} applied={sum(applied.values())} differences={differences(live, expected)}")
    assert kills == KILLS and not dead
    # The load did what it claims: every zombie event reached the log after its task
    # instance's newer try started, so the oracle fences exactly those.
    assert zombies and expected.fenced_pushes == zombies
    assert zombie_clears and expected.fenced_clears == zombie_clears
    assert len(retried) == PRODUCERS * RETRIED
    # Overrides of both kinds on both kinds of task instance, and sets that took a try above 1.
    assert all(overrides.values()) and sets_above_1
    # The live view: the acknowledged events folded by the fencing rule (no fenced value
    # visible, none lost), with every fenced push and every override in the index.
    found = differences(live, expected)
    assert found == dict.fromkeys(found, 0)
    assert len(live.fenced_pushes) == len(zombies) and len(live.fenced_clears) == len(zombie_clears)
    assert set(live.overrides) == set(sent)
    assert versions_wrong == 0
    # Each view seen, when a kill came or as a batch committed, was the log folded up to its
    # offsets: rows, tries and index alike.
    for seen in snapshots:
        found = differences(seen, expected_view(events, seen.offsets))
        assert found == dict.fromkeys(found, 0), seen.offsets
    # Applied exactly once: the view's counters equal the log, partition by partition.
    assert applied == {p: o for p, o in end.items() if o}
    assert len(events) == sum(end.values())  # every event was acknowledged (no broker fault here)
    # The rule is a function of the log alone: a rebuild reaches the same view, index and tries.
    rebuilt = tmp_path / "rebuilt.db"
    await rebuild(settings, rebuilt)
    result = verify(settings.view_path, rebuilt)
    assert result.same, (result.differences, result.version_differences)
