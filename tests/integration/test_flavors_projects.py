"""Flavors and projects through the real CLI (and, for what only the HTTP API asks, the
application layer), on both stores."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from application import lifecycle, queries
from application.bootstrap import Context
from application.identity import Caller, operating_system_user
from domain.errors import NotFound, UsageError
from domain.flavor import flavor_id_for

WAIT = ("--wait", "--timeout", "60")
SIZES = ("--vcpus", "1", "--memory-mb", "256", "--disk-gb", "1")


def test_flavor_create_list_delete(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    created = h.ok("flavor", "create", "m1.small", "--vcpus", "2", "--memory-mb", "2048",
                   "--disk-gb", "20").out.strip()
    assert created == str(flavor_id_for("m1.small"))  # from the name, as a host's id
    h.ok("flavor", "create", "tiny", "--id", "1", "--vcpus", "1", "--memory-mb", "512",
         "--disk-gb", "0", "--swap-mb", "128", "--private", "--description", "small")
    listed = {f["name"]: f for f in h.ok("flavor", "list", "--json").json()}
    assert listed["m1.small"] == {
        "id": created, "name": "m1.small", "vcpus": 2, "memory_mb": 2048, "disk_gb": 20,
        "ephemeral_gb": 0, "swap_mb": 0, "is_public": True, "description": None,
        "extra_specs": {}}
    assert (listed["tiny"]["id"], listed["tiny"]["swap_mb"], listed["tiny"]["is_public"],
            listed["tiny"]["description"]) == ("1", 128, False, "small")
    assert h.ok("flavor", "list").out.split()[:2] == ["ID", "NAME"]
    again = h.shelf("flavor", "create", "m1.small", *SIZES)
    assert again.code == 4 and "already exists" in again.err
    assert h.shelf("flavor", "create", "other", "--id", "1", *SIZES).code == 4  # id taken
    assert h.shelf("flavor", "create", "bad", "--vcpus", "0", "--memory-mb", "1",
                   "--disk-gb", "1").code == 2
    assert h.shelf("flavor", "create", " ", *SIZES).code == 2
    h.ok("flavor", "delete", "1")  # by id
    h.ok("flavor", "delete", "m1.small")  # by name
    assert h.ok("flavor", "list", "--json").json() == []
    assert h.shelf("flavor", "delete", "m1.small").code == 3
    h.ok("flavor", "create", "m1.small", "--vcpus", "4", "--memory-mb", "4096",
         "--disk-gb", "40")  # a deleted flavor's name, used again
    assert [f["vcpus"] for f in h.ok("flavor", "list", "--json").json()] == [4]


def test_boot_from_a_flavor_keeps_its_copy(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    h.ok("flavor", "create", "m1.small", "--vcpus", "2", "--memory-mb", "1024",
         "--disk-gb", "5")
    h.ok("boot", "vm1", "--flavor", "m1.small", *WAIT)  # no --host: placed by the worker
    vm = h.show("vm1")
    assert (vm["vcpus"], vm["memory_mb"], vm["disk_gb"], vm["host"]) == (2, 1024, 5, "h1")
    assert vm["flavor"] == {
        "id": str(flavor_id_for("m1.small")), "name": "m1.small", "vcpus": 2,
        "memory_mb": 1024, "disk_gb": 5, "ephemeral_gb": 0, "swap_mb": 0, "extra_specs": {}}
    h.ok("boot", "vm2", "--flavor", "m1.small", "--disk-gb", "8", "--host", "h1", *WAIT)
    assert h.show("vm2")["disk_gb"] == 8 and h.show("vm2")["flavor"]["disk_gb"] == 5
    h.ok("flavor", "delete", "m1.small")
    assert h.show("vm1")["flavor"]["name"] == "m1.small"  # the instance's own copy
    assert h.show("vm1")["flavor"] == h.ok("show", "vm1", "--as-of", "now",
                                           "--json").json()["flavor"]
    h.ok("shelve", "vm1", *WAIT)
    h.ok("unshelve", "vm1", *WAIT)
    assert h.show("vm1")["status"] == "ACTIVE"
    missing = h.shelf("boot", "vm3", "--flavor", "m1.small")
    assert missing.code == 3 and "m1.small" in missing.err
    unsized = h.shelf("boot", "vm3", "--host", "h1")
    assert unsized.code == 2 and "--flavor" in unsized.err
    assert h.shelf("boot", "vm3", "--vcpus", "1").code == 2


def test_instances_record_and_filter_by_project(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = harness_factory()
    h.add_host("h1")
    h.ok("boot", "vm1", "--project", "web", *SIZES, *WAIT)
    h.ok("boot", "vm2", *SIZES, *WAIT)  # the CLI's default project
    monkeypatch.setenv("SHELF_PROJECT", "ops")
    h.ok("boot", "vm3", *SIZES, *WAIT)
    vm1 = h.show("vm1")
    assert (vm1["project_id"], vm1["user_id"]) == ("web", operating_system_user())
    assert [h.show(n)["project_id"] for n in ("vm2", "vm3")] == ["admin", "ops"]
    assert [i["name"] for i in h.ok("list", "--project", "web", "--json").json()] == ["vm1"]
    assert len(h.ok("list", "--json").json()) == 3
    table = h.ok("list").out.splitlines()
    assert "PROJECT_ID" in table[0] and any("web" in line for line in table[1:])
    assert "web" in h.ok("show", "vm1").out
    created = h.ok("audit", "--project", "ops", "--format", "json").json()
    assert [(a["instance_name"], a["action"], a["project_id"]) for a in created] == [
        ("vm3", "create", "ops")]


def test_refused_user_flag(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    refused = h.shelf("--user", "alice", "list")
    assert refused.code == 2 and len(refused.err.strip().splitlines()) == 1
    assert "operating-system user" in refused.err


def test_project_scope_hides_other_projects(harness_factory: Any) -> None:
    """What the HTTP API asks for a non-admin caller: another project's instance is not
    found in show, actions and requests, and a refused request records nothing."""
    h = harness_factory()
    h.add_host("h1")
    web = Caller("alice", "alice-id", "web", frozenset({"member"}))
    ctx = Context(h.store, h.tmp / "data")
    try:
        booted = lifecycle.boot(ctx, web, name="vm1", vcpus=1, memory_mb=256, disk_gb=1)
        h.ok("boot", "vm2", "--project", "db", *SIZES, *WAIT)
        assert queries.show_instance(ctx, "vm1", project="web")["user_id"] == "alice-id"
        version = queries.show_instance(ctx, "vm2")["version"]
        for call in (lambda: queries.show_instance(ctx, "vm2", project="web"),
                     lambda: queries.instance_actions(ctx, "vm2", project="web"),
                     lambda: lifecycle.request(ctx, web, "stop", "vm2", project="web")):
            with pytest.raises(NotFound, match="no such instance: vm2"):
                call()
        assert queries.show_instance(ctx, "vm2")["version"] == version  # nothing recorded
        listed = queries.list_instances(ctx, queries.InstanceFilter(project_id="web"))
        assert [i["id"] for i in listed] == [booted.instance_id]
        assert queries.instance_actions(ctx, "vm1", project="web")[0]["request_id"] == (
            booted.request_id)
    finally:
        ctx.close()


def test_list_pages_by_marker(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    h.add_host("h1")
    names = [f"vm{n}" for n in range(5)]
    for name in names:
        h.ok("boot", name, "--host", "h1", *SIZES)
    ctx = Context(h.store, h.tmp / "data")
    try:
        def page(**wanted: Any) -> list[str]:
            found = queries.list_instances(ctx, queries.InstanceFilter(**wanted))
            return [i["name"] for i in found]

        first = page(limit=2, newest_first=True)
        assert first == ["vm4", "vm3"]
        marker = queries.show_instance(ctx, "vm3")["id"]
        assert page(limit=2, newest_first=True, marker=marker) == ["vm2", "vm1"]
        assert page(marker=marker) == ["vm4"]
        with pytest.raises(NotFound):
            page(marker=str(uuid.uuid4()))
        with pytest.raises(NotFound):
            page(marker=marker, project_id="web")
        assert page(name="^vm[13]$") == ["vm1", "vm3"]  # Nova's ?name=: a regex search
        assert page(name="m2") == ["vm2"]
        with pytest.raises(UsageError, match="Invalid regular expression"):
            page(name="vm(")
        if ctx.db.backend == "postgres":  # Python's syntax, not PostgreSQL's: refused too
            with pytest.raises(UsageError, match="Invalid regular expression"):
                page(name="(?P<x>vm)")
    finally:
        ctx.close()


def test_tables_of_an_older_shelf_are_replayed(store_url: str, tmp_path: Any) -> None:
    """Projection tables made before instances had a project lack its column: the next
    catch-up drops and replays them instead of failing on every write."""
    ctx = Context(store_url, tmp_path / "data")
    try:
        ctx.service.add_host("h1", "test:///default", 8, 8192, 100, "op", "req-h")
        caller = Caller("op", "op", "web")
        lifecycle.boot(ctx, caller, name="vm1", host="h1", vcpus=1, memory_mb=256, disk_gb=1)
        ctx.catch_up()
        for index, table in (("instances_project", "instances"),
                             ("audit_actions_project", "audit_actions")):
            ctx.db.execute(f"DROP INDEX {index}")
            ctx.db.execute(f"ALTER TABLE {table} DROP COLUMN project_id")
    finally:
        ctx.close()
    later = Context(store_url, tmp_path / "data")  # a newer shelf's first command
    try:
        assert [i["project_id"] for i in queries.list_instances(later)] == ["web"]
        page = queries.audit(later, queries.AuditQuery(project="web"))
        assert [a["action"] for a in page] == ["create"]
    finally:
        later.close()
