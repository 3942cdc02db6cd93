"""The `host_usage` projection: each host's capacity, what its claims use, and how many
instances it holds by status; plus a row per change in `host_usage_history`, which is what
`host list --as-of` reads.

Usage comes from the Host aggregate's claims (the source of truth for resources). The
counts come from which host each instance is on: a `shelved` instance is still on its host,
a `shelved_offloaded` or deleted one is on none.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, NamedTuple

from domain.host import Host
from domain.instance import Instance
from domain.states import DELETED
from projections.base import Change
from projections.db import Database
from projections.views import host_view

USAGE_COLUMNS = (
    "name", "uri", "vcpus", "memory_mb", "disk_gb", "vcpus_used", "memory_mb_used",
    "disk_gb_used", "storage", "instances", "statuses", "position", "updated_at",
)
_USAGE_DDL = """name TEXT NOT NULL, uri TEXT NOT NULL, vcpus INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, vcpus_used INTEGER NOT NULL,
    memory_mb_used INTEGER NOT NULL, disk_gb_used INTEGER NOT NULL, storage TEXT NOT NULL,
    instances INTEGER NOT NULL, statuses TEXT NOT NULL, position BIGINT NOT NULL,
    updated_at TEXT"""


class _HostSeen(NamedTuple):  # tuples: one is made per event replayed
    position: int
    at: str | None
    view: dict[str, Any]
    removed: bool = False  # `host remove`: its row goes (its history stays)


class _MemberSeen(NamedTuple):
    position: int
    at: str | None
    instance_id: str
    host: str | None
    status: str


class HostUsageProjection:
    name = "host_usage"
    tables = ("host_usage", "host_members", "host_usage_history")
    # Tables an older shelf made without `storage` are made anew and replayed.
    columns = {"host_usage": USAGE_COLUMNS, "host_usage_history": USAGE_COLUMNS}
    folds = (Instance, Host)
    schema = (
        f"CREATE TABLE IF NOT EXISTS host_usage ({_USAGE_DDL}, PRIMARY KEY (name))",
        f"CREATE TABLE IF NOT EXISTS host_usage_history ({_USAGE_DDL})",
        # Appended to only: its key is a unique index, which a rebuild builds at its end.
        "CREATE UNIQUE INDEX IF NOT EXISTS host_usage_history_key "
        "ON host_usage_history (name, position)",
        "CREATE INDEX IF NOT EXISTS host_usage_history_time "
        "ON host_usage_history (name, updated_at)",
        """CREATE TABLE IF NOT EXISTS host_members (
            instance_id TEXT PRIMARY KEY, host TEXT NOT NULL, status TEXT NOT NULL)""",
    )

    def __init__(self) -> None:
        self._seen: list[_HostSeen | _MemberSeen] = []
        self.forget()

    def forget(self, empty: bool = False) -> None:
        self._seen = []
        self._complete = empty  # the caches below hold every row of the tables
        self._rows: dict[str, dict[str, Any] | None] = {}
        self._members: dict[str, tuple[str, str] | None] = {}
        self._counts: dict[str, Counter[str]] = {}

    def observe(self, change: Change) -> None:
        at, state = change.at, change.state
        if isinstance(state, Host):
            self._seen.append(_HostSeen(change.position, at, host_view(state), state.removed))
        elif isinstance(state, Instance):
            host = state.host if state.vm_state != DELETED else None
            self._seen.append(_MemberSeen(change.position, at, change.aggregate_id, host,
                                          state.status))

    def write(self, db: Database) -> None:
        history: list[tuple[Any, ...]] = []
        dirty_hosts: set[str] = set()
        removed: set[str] = set()
        moved: dict[str, tuple[str, str] | None] = {}
        for seen in self._seen:
            if isinstance(seen, _HostSeen) and seen.removed:
                self._rows[seen.view["name"]] = None
                removed.add(seen.view["name"])
                continue
            if isinstance(seen, _HostSeen):
                removed.discard(seen.view["name"])
                touched = self._host_changed(db, seen)
            else:
                touched = self._member_changed(db, seen, moved)
            for name in dict.fromkeys(touched):  # a status change touches one host twice
                row = self._rows.get(name)
                if row is not None:
                    row.update(position=seen.position, updated_at=seen.at)
                    history.append(self._values(row))
                    dirty_hosts.add(name)
        self._seen = []
        db.delete_many("host_usage", ("name",), [(name,) for name in sorted(removed)])
        self._flush(db, dirty_hosts, moved, history)

    def _host_changed(self, db: Database, seen: _HostSeen) -> list[str]:
        name = seen.view["name"]
        counts = self._counts_of(db, name)
        self._rows[name] = {**seen.view, "instances": sum(counts.values()),
                            "statuses": _statuses(counts)}
        return [name]

    def _member_changed(self, db: Database, seen: _MemberSeen,
                        moved: dict[str, tuple[str, str] | None]) -> list[str]:
        old = self._member(db, seen.instance_id)
        new = (seen.host, seen.status) if seen.host is not None else None
        if old == new:
            return []
        self._members[seen.instance_id] = moved[seen.instance_id] = new
        touched = []
        for member, step in ((old, -1), (new, +1)):
            if member is None:
                continue
            host, status = member
            counts = self._counts_of(db, host)
            counts[status] = left = counts.get(status, 0) + step
            if not left:
                del counts[status]
            row = self._row(db, host)
            if row is not None:
                row.update(instances=sum(counts.values()), statuses=_statuses(counts))
            touched.append(host)
        return touched

    def _member(self, db: Database, instance_id: str) -> tuple[str, str] | None:
        if instance_id not in self._members and not self._complete:
            rows = db.query("SELECT host, status FROM host_members WHERE instance_id = ?",
                            (instance_id,))
            self._members[instance_id] = (rows[0]["host"], rows[0]["status"]) if rows else None
        return self._members.get(instance_id)

    def _counts_of(self, db: Database, host: str) -> Counter[str]:
        if host not in self._counts:
            counts: Counter[str] = Counter()
            if not self._complete:
                for row in db.query("SELECT status, count(*) AS n FROM host_members "
                                    "WHERE host = ? GROUP BY status", (host,)):
                    counts[row["status"]] = int(row["n"])
            self._counts[host] = counts
        return self._counts[host]

    def _row(self, db: Database, host: str) -> dict[str, Any] | None:
        if host not in self._rows and not self._complete:
            rows = db.query("SELECT * FROM host_usage WHERE name = ?", (host,))
            self._rows[host] = rows[0] if rows else None
        return self._rows.get(host)

    def _values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[column] for column in USAGE_COLUMNS)

    def _flush(self, db: Database, hosts: set[str], moved: dict[str, tuple[str, str] | None],
               history: list[tuple[Any, ...]]) -> None:
        db.replace_many("host_usage", USAGE_COLUMNS, ("name",),
                        [self._values(row) for name in sorted(hosts)
                         if (row := self._rows.get(name)) is not None])
        db.delete_many("host_members", ("instance_id",), [(instance_id,) for instance_id in moved])
        db.insert_many("host_members", ("instance_id", "host", "status"),
                       [(instance_id, *member) for instance_id, member in moved.items() if member])
        db.insert_many("host_usage_history", USAGE_COLUMNS, history)


def _statuses(counts: Counter[str]) -> str:
    """`json.dumps` of the non-zero counts in status order, built from each status's
    JSON once (this runs for every change a host sees)."""
    return "{" + ", ".join([f"{_JSON_KEYS.get(status) or _json_key(status)}: {n}"
                            for status, n in sorted(counts.items()) if n]) + "}"


_JSON_KEYS: dict[str, str] = {}


def _json_key(status: str) -> str:
    key = _JSON_KEYS[status] = json.dumps(status)
    return key
