"""A poison event, written straight into the store (as an older version or a bug could
have), among good events: reads, `serve` and `projections rebuild` go on past it, and
`projections status` shows it quarantined with its reason (both stores)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any

import psycopg

from adapters.eventstore import parse_store_url
from domain.host import host_id_for
from tests.conftest import Harness

WAIT = ("--wait", "--timeout", "60")
HUGE = 10**25  # no INTEGER or BIGINT column holds it, on either store
GARBAGE = b"\xff\x00 not an event {"


class RawStore:
    """The events table itself, beside eventsourcing: what a bug could have written."""

    def __init__(self, url: str) -> None:
        self.store = parse_store_url(url)
        self.url = url

    def _sql(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.store.backend == "sqlite":
            with sqlite3.connect(str(self.store.sqlite_path)) as conn:
                return conn.execute(sql.replace("%s", "?").replace("shelf_events",
                                                                   "stored_events"),
                                    params).fetchall()
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def _id(self, aggregate_id: str) -> Any:
        return uuid.UUID(aggregate_id).hex if self.store.backend == "sqlite" else aggregate_id

    def event(self, aggregate_id: str, version: int) -> tuple[str, bytes]:
        (topic, state), = self._sql(
            "SELECT topic, state FROM shelf_events "
            "WHERE originator_id = %s AND originator_version = %s",
            (self._id(aggregate_id), version))
        return topic, bytes(state)

    def last_version(self, aggregate_id: str) -> int:
        (version,), = self._sql("SELECT max(originator_version) FROM shelf_events "
                                "WHERE originator_id = %s", (self._id(aggregate_id),))
        return int(version)

    def insert(self, aggregate_id: str, version: int, topic: str, state: bytes) -> None:
        self._sql("INSERT INTO shelf_events (originator_id, originator_version, topic, state) "
                  "VALUES (%s, %s, %s, %s)", (self._id(aggregate_id), version, topic, state))


def boot(harness: Harness, name: str) -> str:
    result = harness.ok("boot", name, "--host", "h1", "--vcpus", "1", "--memory-mb", "128",
                        "--disk-gb", "1")
    return result.out.strip()


def poisoned(harness: Harness) -> dict[str, str]:
    """Good instances before and after two poison events: an instance created with a
    number no column can hold, and an event of `victim` whose state isn't JSON at all."""
    raw = RawStore(harness.store)
    ids = {"before": boot(harness, "before"), "victim": boot(harness, "victim")}
    topic, state = raw.event(ids["before"], 1)
    huge = json.loads(state) | {"name": "huge", "vcpus": HUGE}
    ids["huge"] = str(uuid.uuid4())
    raw.insert(ids["huge"], 1, topic, json.dumps(huge).encode())
    raw.insert(ids["victim"], 2, topic, GARBAGE)
    ids["after"] = boot(harness, "after")
    return ids


def quarantined(harness: Harness) -> set[tuple[str, str, int]]:
    status = harness.ok("projections", "status", "--json").json()
    found = set()
    for projection in status:
        assert projection["lag"] == 0
        for entry in projection["quarantined"]:
            assert entry["reason"]
            found.add((projection["name"], entry["aggregate_id"], entry["version"]))
    return found


def wait_for_status(harness: Harness, ref: str, status: str) -> None:
    deadline = time.monotonic() + 60
    while harness.show(ref)["status"] != status and time.monotonic() < deadline:
        time.sleep(0.05)
    assert harness.show(ref)["status"] == status


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1


def test_reads_go_on_past_a_poison_event(harness_factory: Any) -> None:
    harness = harness_factory(start=False)
    harness.add_host("h1")
    ids = poisoned(harness)

    listed = harness.ok("list", "--json")
    assert {"before", "victim", "after"} <= {row["name"] for row in listed.json()}
    assert "quarantined" in listed.err and one_line(listed.err)
    assert harness.show("after")["vcpus"] == 1
    assert harness.show(ids["huge"])["vcpus"] == HUGE  # from its events, not the table
    unreadable = harness.shelf("show", "victim")
    assert unreadable.code == 1 and one_line(unreadable.err)
    assert "can't be read" in unreadable.err and "Traceback" not in unreadable.err
    assert "h1" in harness.hosts()
    audit = harness.ok("audit", "--format", "json").json()
    assert {"before", "after"} <= {row["instance_name"] for row in audit}

    found = quarantined(harness)
    assert ("instances", ids["huge"], 1) in found
    for projection in ("instances", "host_usage", "audit"):
        assert (projection, ids["victim"], 2) in found
    assert not {aggregate for _, aggregate, _ in found} - {ids["huge"], ids["victim"]}
    text = harness.ok("projections", "status").out
    assert "quarantined events" in text and ids["victim"] in text


def test_serve_drives_the_rest_of_the_fleet(harness_factory: Any) -> None:
    harness = harness_factory(start=False)
    harness.add_host("h1")
    ids = poisoned(harness)
    harness.start_worker()
    for name in ("before", "after"):
        wait_for_status(harness, name, "ACTIVE")
    harness.ok("shelve", "before", *WAIT)
    harness.wait_until_idle()
    assert harness.show("before")["status"] == "SHELVED_OFFLOADED"
    assert harness.show("after")["status"] == "ACTIVE"
    assert harness.show(ids["huge"])["status"] == "ERROR"  # no host has room for it
    assert harness.worker is not None
    assert harness.worker.unreadable == {uuid.UUID(ids["victim"])}  # skipped, not retried
    assert harness.hosts()["h1"]["vcpus_used"] == 1  # `after`'s claim only


def test_rebuild_finishes_and_keeps_the_quarantine_record(harness_factory: Any) -> None:
    harness = harness_factory(start=False)
    harness.add_host("h1")
    ids = poisoned(harness)
    harness.ok("list")  # (a read catches the projections up; `status` only reports)
    before = quarantined(harness)
    rebuilt = harness.ok("projections", "rebuild")
    assert "rebuilt all projections" in rebuilt.out
    assert quarantined(harness) == before
    assert {"before", "victim", "after"} <= {row["name"] for row in
                                            harness.ok("list", "--json").json()}
    assert ids["huge"] not in {row["id"] for row in harness.ok("list", "--json").json()}
    assert harness.ok("host", "list", "--json").json()[0]["name"] == "h1"


def test_a_failing_store_quarantines_nothing(harness_factory: Any,
                                             monkeypatch: Any) -> None:
    """A batch that fails for a reason of the store's (here the `projection:batch`
    failpoint, which fails inside the batch's transaction) is retried, not quarantined,
    even when the batch also holds a poison event."""
    harness = harness_factory(start=False)
    harness.add_host("h1")
    poisoned(harness)
    monkeypatch.setenv("SHELF_FAILPOINTS", "projection:batch=error")
    failed = harness.shelf("list")
    assert failed.code == 1 and "injected an error" in failed.err
    assert quarantined_rows(harness) == 0
    monkeypatch.delenv("SHELF_FAILPOINTS")
    harness.ok("list")
    assert quarantined_rows(harness) > 0


def quarantined_rows(harness: Harness) -> int:
    status = harness.ok("projections", "status", "--json").json()
    return sum(len(projection["quarantined"]) for projection in status)


def test_a_host_that_cant_be_read_is_left_out_of_placement(harness_factory: Any) -> None:
    harness = harness_factory()
    harness.add_host("h1", memory_mb=4096)
    harness.add_host("h2", memory_mb=8192)  # the one with the most free memory
    raw = RawStore(harness.store)
    h2 = str(host_id_for("h2"))
    topic, _ = raw.event(h2, 1)
    raw.insert(h2, raw.last_version(h2) + 1, topic, GARBAGE)
    harness.ok("boot", "web", "--host", "h1", "--vcpus", "1", "--memory-mb", "128",
               "--disk-gb", "1", *WAIT)
    harness.ok("shelve", "web", *WAIT)
    harness.ok("unshelve", "web", *WAIT)  # placed by free memory, among readable hosts
    assert (harness.show("web")["status"], harness.show("web")["host"]) == ("ACTIVE", "h1")
    assert "h1" in harness.hosts()
