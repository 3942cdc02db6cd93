"""The projections: incremental == rebuilt over a long random history, host usage after every
step, exact `--as-of` states, and a process killed mid-catch-up leaving nothing half-done."""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from application.bootstrap import Context
from bench.seed import Seeder
from domain.errors import ShelfError
from domain.host import Host
from domain.instance import Instance
from domain.process_manager import Settings
from domain.service import all_hosts, find, new_request_id
from projections import queries
from projections.audit import actions_from_history
from projections.base import utc_text
from projections.runner import ProjectionRunner, all_projections
from tests.conftest import node_xml

SHELF = str(Path(sys.executable).with_name("shelf"))


def dump(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every projection table, rows sorted: what two runs must agree on exactly."""
    tables = {}
    for projection in all_projections():
        for table in projection.tables:
            rows = db.query(f"SELECT * FROM {table}")
            tables[table] = sorted(tuple(str(v) for v in row.values()) for row in rows)
    return tables


def index_names(db: Any, check: bool = True) -> set[str]:
    if db.backend == "postgres":
        rows = db.query("SELECT indexname AS name FROM pg_indexes "
                        "WHERE schemaname = current_schema()")
    else:
        rows = db.query("SELECT name FROM sqlite_master WHERE type = 'index'")
    names = {row["name"] for row in rows}
    assert not check or ("audit_actions_host" in names and "instances_name" in names)
    return names


def seeded(ctx: Context, tmp_path: Path, instances: int, on_flush: Any = None) -> int:
    seeder = Seeder(ctx.app, tmp_path / "seed", hosts=3, seed=11, error_rate=0.05,
                    flush_every=10, on_flush=on_flush or (lambda: None))
    (tmp_path / "seed").mkdir(exist_ok=True)
    try:
        return seeder.run(instances)
    finally:
        seeder.close()


def test_incremental_equals_rebuilt_over_a_long_random_history(
    store_url: str, tmp_path: Path
) -> None:
    ctx = Context(store_url, tmp_path / "data")
    rng = random.Random(5)
    events = seeded(ctx, tmp_path, 700,
                    on_flush=lambda: ctx.projector.catch_up(batch=rng.choice((7, 100, 1000))))
    ctx.projector.catch_up()
    assert events >= 10_000
    incremental = dump(ctx.db)
    failed = [row for row in incremental["audit_events"] if "Error" in row]
    deleted = ctx.db.query("SELECT count(*) AS n FROM instances WHERE vm_state = 'deleted'")
    assert failed and deleted[0]["n"] > 0  # the history has failures and deletes

    indexes = index_names(ctx.db)
    fresh = ProjectionRunner(ctx.app, ctx.db)
    assert fresh.rebuild() == ctx.app.recorder.max_notification_id()
    assert dump(ctx.db) == incremental
    assert index_names(ctx.db) == indexes  # dropped for the replay, built again after it
    assert {s.lag for s in fresh.status()} == {0}

    # The CLI's rebuild, in three processes at once on PostgreSQL (one on SQLite).
    rebuilt = subprocess.run([SHELF, "--store", store_url, "projections", "rebuild",
                              "--jobs", "3"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "SHELF_DATA_DIR": str(tmp_path / "data")})
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{ctx.app.recorder.max_notification_id()} events" in rebuilt.stdout
    assert dump(ctx.db) == incremental
    assert index_names(ctx.db) == indexes
    assert {s.lag for s in fresh.status()} == {0}
    ctx.close()


def test_two_processes_taking_turns_at_catching_up_equal_a_rebuild(
    store_url: str, tmp_path: Path
) -> None:
    """As `serve` and read commands do: each runner's cached aggregates fall behind by
    whatever the other applied, and are brought forward from the store."""
    ctx = Context(store_url, tmp_path / "data")
    other = Context(store_url, tmp_path / "data")
    rng = random.Random(9)
    seeded(ctx, tmp_path, 150, on_flush=lambda: rng.choice((ctx, other)).projector.catch_up(
        batch=rng.choice((5, 50, 500))))
    other.close()
    assert_catch_up_equals_rebuild(ctx)


def test_actions_table_matches_the_history_it_came_from(store_url: str, tmp_path: Path) -> None:
    ctx = Context(store_url, tmp_path / "data")
    seeded(ctx, tmp_path, 60)
    ctx.projector.catch_up()
    for row in ctx.db.query("SELECT id FROM instances"):
        derived = actions_from_history(queries.history(ctx.db, row["id"]))
        stored = queries.actions(ctx.db, row["id"])
        skip = {"host", "instance_id", "instance_name", "project_id", "position"}
        assert [{k: v for k, v in a.items() if k not in skip} for a in stored] == [
            {k: v for k, v in a.items() if k != "host"} for a in derived]
    ctx.close()


def test_host_usage_after_every_step_is_the_sum_of_the_claims(
    store_url: str, tmp_path: Path
) -> None:
    ctx = Context(store_url, tmp_path / "data")
    for name in ("h1", "h2"):
        node = node_xml(tmp_path / f"{name}.xml")
        ctx.service.add_host(name, f"test://{node}", 8, 8192, 100, "t", new_request_id())
    # The test driver, in this process; shelved instances stay shelved until asked.
    pm = ctx.process_manager(Settings(shelved_offload_time=-1, shutdown_timeout=0))
    vm = ctx.service.boot(name="vm1", host="h1", vcpus=2, memory_mb=512, disk_gb=3,
                          image_id=None, volume_backed=False, user="t",
                          request_id=new_request_id())
    ctx.service.boot(name="vm2", host="h1", vcpus=1, memory_mb=256, disk_gb=1, image_id=None,
                     volume_backed=False, user="t", request_id=new_request_id())
    checks = 0
    for action, host in (("boot", None), ("shelve", None), ("shelveOffload", None),
                         ("unshelve", "h2"), ("stop", None), ("shelve", None),
                         ("unshelve", None), ("delete", None)):
        if action != "boot":
            ctx.service.request(action, str(vm.id), "t", new_request_id(), host)
        while (instance := find(ctx.repo, vm.id, Instance)) and (step := instance.next_step()):
            pm.perform(instance, step)
            pm.records.record_unrecorded(instance)  # as a drive does before it stops
            checks += assert_usage_matches_claims(ctx)
    assert checks > 20
    assert {row["name"]: row["instances"] for row in queries.hosts(ctx.db)} == {"h1": 0, "h2": 0}
    ctx.close()


def assert_usage_matches_claims(ctx: Context) -> int:
    ctx.projector.catch_up()
    usage = {row["name"]: row for row in queries.hosts(ctx.db)}
    instances = [i for i in queries.live_instances(ctx.db)]
    for host in all_hosts(ctx.repo):
        assert isinstance(host, Host)
        row = usage[host.name]
        for key in ("vcpus", "memory_mb", "disk_gb"):
            claimed = sum(claim[key] for claim in host.claims.values())
            assert row[f"{key}_used"] == claimed >= 0
        on_host = [i for i in instances if i["host"] == host.name]
        assert row["instances"] == len(on_host) == sum(row["statuses"].values())
        # Offloaded (and not being unshelved onto a host right now): counts nowhere.
        offloaded = [i for i in on_host
                     if i["vm_state"] == "shelved_offloaded" and i["task_state"] is None]
        assert not offloaded
    return 1


def test_as_of_gives_the_exact_earlier_states(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    h.add_host("h2")
    assert h.shelf("show", "nothing", "--as-of", "-1h").code == 3
    seen: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
    wait = ("--wait", "--timeout", "60")
    vm1 = h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
                "--disk-gb", "1", *wait).out.strip()
    for command in (("shelve", vm1), ("unshelve", vm1, "--host", "h2"), ("stop", vm1),
                    ("start", vm1), ("delete", vm1)):
        time.sleep(0.02)
        seen.append((now_text(), h.show(vm1), h.ok("host", "list", "--json").json()))
        h.ok(*command, *wait)
    time.sleep(0.02)
    seen.append((now_text(), h.show(vm1), h.ok("host", "list", "--json").json()))
    assert [state["vm_state"] for _, state, _ in seen] == [
        "active", "shelved_offloaded", "active", "stopped", "active", "deleted"]
    for moment, state, hosts in seen:
        assert h.ok("show", vm1, "--as-of", moment, "--json").json() == state
        assert h.ok("host", "list", "--as-of", moment, "--json").json() == hosts
    assert h.shelf("show", vm1, "--as-of", "-1h").code == 3  # it is younger than that
    bad = h.shelf("show", vm1, "--as-of", "yesterday-ish")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "bad time" in bad.err


def test_a_long_lived_instance_loads_from_snapshots_to_the_same_state(
    harness_factory: Any, tmp_path: Path
) -> None:
    h = harness_factory()
    h.add_host("h1")
    wait = ("--wait", "--timeout", "60")
    vm1 = h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
                "--disk-gb", "1", *wait).out.strip()
    seen: list[tuple[str, dict[str, Any]]] = []
    for _ in range(20):  # about 130 events: snapshots at versions 50 and 100
        for command in ("pause", "unpause"):
            h.ok(command, vm1, *wait)
            time.sleep(0.002)
            seen.append((now_text(), h.show(vm1)))
    ctx = Context(h.store, tmp_path / "data")
    try:
        instance_id = uuid.UUID(vm1)
        snapshots = list(ctx.app.snapshots.get(instance_id)) if ctx.app.snapshots else []
        assert [s.originator_version for s in snapshots][:2] == [50, 100]
        folded: Any = None
        for event in ctx.app.events.get(instance_id):  # every event, no snapshot
            folded = event.mutate(folded)
        assert vars(ctx.app.repository.get(instance_id)) == vars(folded)
    finally:
        ctx.close()
    for moment, state in seen[::7]:  # before, between and after the snapshots
        assert h.ok("show", vm1, "--as-of", moment, "--json").json() == state


def now_text() -> str:
    return datetime.now(UTC).isoformat()


# ---- a crash mid-catch-up --------------------------------------------------------------

def positions(store_url: str, tmp_path: Path) -> dict[str, int]:
    ctx = Context(store_url, tmp_path / "data")
    try:
        return ctx.projector.positions()
    finally:
        ctx.close()


def test_crash_inside_a_batch_commits_neither_rows_nor_position(
    store_url: str, tmp_path: Path
) -> None:
    ctx = Context(store_url, tmp_path / "data")
    seeded(ctx, tmp_path, 30)
    ctx.projector.ensure_schema()
    env = {**os.environ, "SHELF_FAILPOINTS": "projection:batch=crash",
           "SHELF_DATA_DIR": str(tmp_path / "data")}
    crashed = subprocess.run([SHELF, "--store", store_url, "list"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 137
    assert set(positions(store_url, tmp_path).values()) == {0}
    assert all(rows == [] for rows in dump(ctx.db).values())
    assert_catch_up_equals_rebuild(ctx)


def test_killed_mid_catch_up_resumes_without_gaps_or_doubles(
    store_url: str, tmp_path: Path
) -> None:
    ctx = Context(store_url, tmp_path / "data")
    seeded(ctx, tmp_path, 400)
    head = ctx.app.recorder.max_notification_id()
    ctx.projector.ensure_schema()
    env = {**os.environ, "SHELF_DATA_DIR": str(tmp_path / "data")}
    catching_up = subprocess.Popen([SHELF, "--store", store_url, "list"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reached = positions(store_url, tmp_path)
        if min(reached.values()) > 0 and max(reached.values()) < head:
            break
        time.sleep(0.005)
    catching_up.send_signal(signal.SIGKILL)
    catching_up.wait(timeout=30)
    assert min(reached.values()) > 0 and max(reached.values()) < head, reached  # mid-way
    assert_catch_up_equals_rebuild(ctx)


def test_catch_up_leaves_the_projections_to_a_running_rebuild(pg_url: str,
                                                               tmp_path: Path) -> None:
    ctx = Context(pg_url, tmp_path / "data")
    seeded(ctx, tmp_path, 5)
    rebuilding = ProjectionRunner(ctx.app, ctx.db)
    rebuilding.ensure_schema()
    with rebuilding._rebuild_lock():  # as `projections rebuild` holds it, in this session
        ctx.db.execute("DROP INDEX audit_actions_host")  # as the rebuild drops them
        other = Context(pg_url, tmp_path / "data")  # another process's session
        try:
            assert other.projector.catch_up() == 0
            assert set(other.projector.positions().values()) == {0}
            assert "audit_actions_host" not in index_names(other.db, check=False)
        finally:
            other.close()
    assert ctx.projector.catch_up() == ctx.app.recorder.max_notification_id()
    assert "audit_actions_host" in index_names(ctx.db)  # built once the rebuild is over
    ctx.close()


def test_rows_name_ids_and_times_as_the_events_do(store_url: str, tmp_path: Path) -> None:
    """Ids as str(uuid) and times as utc_text, whichever way the reader got them (text
    straight from the store, or formatted): a change to both catch-up and rebuild would
    slip past the test that compares the two."""
    ctx = Context(store_url, tmp_path / "data")
    seeded(ctx, tmp_path, 4)
    ctx.projector.catch_up()
    events = [ctx.app.mapper.to_domain_event(n)
              for n in ctx.app.recorder.select_notifications(start=1, limit=100_000)]
    expected = {(str(e.originator_id), e.originator_version): utc_text(e.timestamp)
                for e in events if isinstance(e, Instance.Event)}
    rows = ctx.db.query("SELECT instance_id, version, timestamp FROM audit_history")
    assert {(r["instance_id"], int(r["version"])): r["timestamp"] for r in rows} == expected
    ids = {row["id"] for row in ctx.db.query("SELECT id FROM instances")}
    assert ids == {key[0] for key in expected}
    ctx.close()


def test_an_older_sqlite_tables_primary_key_serves_as_its_key(tmp_path: Path) -> None:
    """SQLite can't drop a primary key: a table made with one gets no second index."""
    ctx = Context(f"sqlite:///{tmp_path / 'shelf.db'}", tmp_path / "data")
    ctx.db.execute("CREATE TABLE audit_events (instance_id TEXT NOT NULL, version INTEGER "
                   "NOT NULL, request_id TEXT NOT NULL, position BIGINT NOT NULL, event TEXT "
                   "NOT NULL, start_time TEXT NOT NULL, finish_time TEXT NOT NULL, result "
                   "TEXT NOT NULL, host TEXT, details TEXT, PRIMARY KEY (instance_id, version))")
    seeded(ctx, tmp_path, 3)
    ctx.projector.catch_up()
    ProjectionRunner(ctx.app, ctx.db).rebuild()
    names = index_names(ctx.db)
    assert "audit_events_key" not in names and "audit_history_key" in names
    assert_catch_up_equals_rebuild(ctx)


def test_an_older_tables_primary_key_gives_way_to_its_unique_index(pg_url: str,
                                                                    tmp_path: Path) -> None:
    """Tables made when the append-only tables' keys were primary keys: the first schema
    check drops those (a rebuild then builds their unique indexes at its end), keeping
    every row, and a key still can't be stored twice."""
    ctx = Context(pg_url, tmp_path / "data")
    seeded(ctx, tmp_path, 4)
    ctx.projector.catch_up()
    before = dump(ctx.db)
    for table, key in (("audit_history", "instance_id, version"),
                       ("audit_events", "instance_id, version"),
                       ("host_usage_history", "name, position")):
        ctx.db.execute(f"DROP INDEX {table}_key")
        ctx.db.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})")  # as made before
    other = Context(pg_url, tmp_path / "data")  # a newer process's first check
    try:
        other.projector.ensure_schema()
        constraints = {row["name"] for row in other.db.query(
            "SELECT conname AS name FROM pg_constraint WHERE contype = 'p'")}
        assert not constraints & {"audit_history_pkey", "audit_events_pkey",
                                  "host_usage_history_pkey"}
        assert {"instances_pkey", "audit_actions_pkey", "host_usage_pkey"} <= constraints
        assert {"audit_history_key", "audit_events_key", "host_usage_history_key"} <= (
            index_names(other.db))
        assert dump(other.db) == before
        row = other.db.query("SELECT * FROM audit_history LIMIT 1")[0]
        with pytest.raises(Exception, match="audit_history_key"), other.db.transaction():
            other.db.insert_many("audit_history", tuple(row), [tuple(row.values())])
        assert other.projector.rebuild(jobs=2) > 0
        assert dump(other.db) == before
    finally:
        other.close()
        ctx.close()


def test_a_key_that_cant_be_built_is_named_and_a_rebuild_mends_it(pg_url: str,
                                                                  tmp_path: Path) -> None:
    """Two rows with one key (a bug while a rebuild had the key dropped): commands say
    which table and what mends it, and `projections rebuild` still runs and mends it."""
    ctx = Context(pg_url, tmp_path / "data")
    seeded(ctx, tmp_path, 3)
    ctx.projector.catch_up()
    before = dump(ctx.db)
    ctx.db.execute("DROP INDEX audit_history_key")
    row = ctx.db.query("SELECT * FROM audit_history LIMIT 1")[0]
    with ctx.db.transaction():
        ctx.db.insert_many("audit_history", tuple(row), [tuple(row.values())])
    other = Context(pg_url, tmp_path / "data")
    try:
        with pytest.raises(ShelfError, match=r"audit_history holds two rows with one key.*"
                                             r"projections rebuild"):
            ProjectionRunner(other.app, other.db).ensure_schema()
        assert ProjectionRunner(other.app, other.db).rebuild() > 0
        assert dump(other.db) == before and "audit_history_key" in index_names(other.db)
    finally:
        other.close()
        ctx.close()


def test_a_failed_replay_still_builds_the_indexes(store_url: str, tmp_path: Path) -> None:
    ctx = Context(store_url, tmp_path / "data")
    seeded(ctx, tmp_path, 5)
    runner = ProjectionRunner(ctx.app, ctx.db)
    runner.ensure_schema()
    indexes = index_names(ctx.db)

    def broken(rows: Any, batch: int) -> Any:
        raise RuntimeError("the store went away")

    runner.reader.rows = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="went away"):  # its own error, not a clean-up's
        runner.rebuild()
    assert index_names(ctx.db) == indexes
    ctx.close()


@pytest.mark.parametrize("enabled", [True, False])
def test_a_replay_pauses_the_garbage_collector_and_puts_it_back(
        enabled: bool, tmp_path: Path) -> None:
    """A replay runs without cyclic collections, and leaves the collector as it found it,
    also when the replay fails."""
    ctx = Context(f"sqlite:///{tmp_path / 'shelf.db'}", tmp_path / "data")
    seeded(ctx, tmp_path, 3)
    runner = ProjectionRunner(ctx.app, ctx.db)
    during: list[bool] = []
    rows = runner.reader.rows

    def watched(after: int, batch: int) -> Any:
        during.append(gc.isenabled())
        return rows(after, batch)

    runner.reader.rows = watched  # type: ignore[method-assign]
    (gc.enable if enabled else gc.disable)()
    try:
        runner.rebuild()
        assert during and not any(during) and gc.isenabled() == enabled
        runner.reader.rows = lambda after, batch: 1 / 0  # type: ignore[method-assign]
        with pytest.raises(ZeroDivisionError):
            runner.rebuild()
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
        ctx.close()


def assert_catch_up_equals_rebuild(ctx: Context) -> None:
    ProjectionRunner(ctx.app, ctx.db).catch_up()
    caught_up = dump(ctx.db)
    ProjectionRunner(ctx.app, ctx.db).rebuild()
    assert dump(ctx.db) == caught_up
    ctx.close()


@pytest.mark.parametrize("argv", [
    ("projections", "rebuild", "nonsense"),
    ("projections", "rebuild", "--jobs", "0"),
    ("audit", "--since", "last tuesday"),
    ("audit", "--limit", "-1"),
    ("audit", "--since", "-900000w"),  # before the year 1
    ("--store", "foo://x", "list"),
    ("--store", "postgresql://h:port/db", "list"),
])
def test_bad_projection_and_audit_input_is_one_line(harness_factory: Any,
                                                    argv: tuple[str, ...]) -> None:
    h = harness_factory()  # its worker makes the store: on none, reads say "no such store"
    result = h.shelf(*argv)
    assert result.code == 2 and result.err.count("\n") == 1 and "Traceback" not in result.err


def test_unknown_instance_at_a_time_is_not_found(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    result = h.shelf("show", str(uuid.uuid4()), "--as-of", "-1h")
    assert result.code == 3
