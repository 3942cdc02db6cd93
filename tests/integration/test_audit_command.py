"""`shelf audit`: every filter, the three formats, and paging, on a small real history."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from application import lifecycle
from application.bootstrap import Context
from application.identity import Caller
from application.waiting import ActionFailed, wait_for_idle

# Two verified identities in two projects, as the HTTP API records them (the CLI records
# the operating-system user it runs as, the same for every command of one test).
ALICE = Caller("alice", "alice-id", "web", frozenset({"member"}))
BOB = Caller("bob", "bob-id", "db", frozenset({"member"}))


@pytest.fixture
def history(harness_factory: Any) -> Any:
    h = harness_factory()
    h.add_host("h1")
    h.add_host("h2", memory_mb=1024)
    ctx = Context(h.store, h.tmp / "data")

    def done(recorded: lifecycle.Recorded) -> None:
        wait_for_idle(ctx, recorded.instance_id, recorded.request_id, 60)

    try:
        done(lifecycle.boot(ctx, ALICE, name="vm1", host="h1", vcpus=1, memory_mb=2048,
                            disk_gb=1))
        done(lifecycle.boot(ctx, BOB, name="vm2", host="h2", vcpus=1, memory_mb=256,
                            disk_gb=1))
        done(lifecycle.request(ctx, ALICE, "shelve", "vm1"))
        done(lifecycle.request(ctx, BOB, "stop", "vm2"))
        with pytest.raises(ActionFailed):  # h2 has no room for 2048 MB
            done(lifecycle.request(ctx, ALICE, "unshelve", "vm1", host="h2"))
    finally:
        ctx.close()
    return h


def actions(h: Any, *filters: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = h.ok("audit", "--format", "json", *filters).json()
    return found


def names(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(a["instance_name"], a["action"]) for a in found]


def test_filters(history: Any) -> None:
    h = history
    assert names(actions(h)) == [("vm1", "create"), ("vm2", "create"), ("vm1", "shelve"),
                                 ("vm2", "stop"), ("vm1", "unshelve")]
    assert names(actions(h, "--instance", "vm1")) == [
        ("vm1", "create"), ("vm1", "shelve"), ("vm1", "unshelve")]
    assert names(actions(h, "--host", "h2")) == [("vm2", "create"), ("vm2", "stop")]
    assert names(actions(h, "--user", "bob")) == [("vm2", "create"), ("vm2", "stop")]
    assert names(actions(h, "--project", "db")) == [("vm2", "create"), ("vm2", "stop")]
    assert {a["project_id"] for a in actions(h, "--instance", "vm1")} == {"web"}
    assert actions(h, "--project", "nobody") == []
    assert h.shelf("audit", "--project", "db", "--instance", "vm1").code == 3  # not db's
    assert names(actions(h, "--action", "shelve")) == [("vm1", "shelve")]
    failed = actions(h, "--result", "Error", "--events")
    assert names(failed) == [("vm1", "unshelve")]
    assert "host h2 has no room" in failed[0]["message"]
    assert [e["result"] for e in failed[0]["events"]] == ["Error"]
    assert actions(h, "--since", "2999-01-01T00:00:00Z") == []
    assert actions(h, "--until", "-1h") == []
    assert len(actions(h, "--since", "-1h", "--until", "now")) == 5


def test_formats(history: Any) -> None:
    rows = list(csv.DictReader(io.StringIO(history.ok("audit", "--format", "csv").out)))
    assert [row["action"] for row in rows] == ["create", "create", "shelve", "stop", "unshelve"]
    assert rows[-1]["result"] == "Error" and rows[0]["user"] == "alice"
    table = history.ok("audit").out.splitlines()
    assert table[0].split()[:3] == ["POSITION", "START_TIME", "ACTION"] and len(table) == 6


def test_paging(history: Any) -> None:
    h = history
    everything = actions(h)
    first = h.ok("audit", "--format", "json", "--limit", "2")
    page = first.json()
    assert page == everything[:2]
    assert f"--after {page[-1]['position']}" in first.err
    seen = list(page)
    while True:
        result = h.ok("audit", "--format", "json", "--limit", "2", "--after",
                      str(seen[-1]["position"]))
        seen += result.json()
        if "--after" not in result.err:
            break
    assert seen == everything
    assert actions(h, "--limit", "0") == everything
