"""Reads of the projections that the CLI prints: instances, hosts (now and at a time),
actions, history, and filtered audit pages. Every query is served by an index."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from domain.errors import UsageError
from projections.db import Database, Row
from projections.usage import USAGE_COLUMNS
from projections.views import instance_from_row

HOST_FIELDS = tuple(c for c in USAGE_COLUMNS if c not in ("position", "updated_at"))


def instance(db: Database, instance_id: str) -> dict[str, Any] | None:
    rows = db.query("SELECT * FROM instances WHERE id = ?", (instance_id,))
    return instance_from_row(rows[0]) if rows else None


BAD_REGEX = "2201B"  # PostgreSQL's invalid_regular_expression


@dataclass(frozen=True)
class InstanceFilter:
    """Which instances a list shows; None matches anything. Paged by `marker` (the last
    instance id of the previous page) and `limit` (0: no limit)."""

    project_id: str | None = None
    name: str | None = None  # a regular expression the name must contain a match of
    status: str | None = None
    host: str | None = None
    include_deleted: bool = False
    newest_first: bool = False
    marker: str | None = None
    limit: int = 0


def live_instances(db: Database, wanted: InstanceFilter | None = None) -> list[dict[str, Any]]:
    """Instances, oldest first unless `newest_first` (ties by id)."""
    wanted = wanted or InstanceFilter()
    clauses, params = _instance_clauses(wanted)
    if wanted.name is not None:  # SQLite's REGEXP is Python's re.search (projections/db.py)
        clauses.append("name ~ ?" if db.backend == "postgres" else "name REGEXP ?")
        params.append(wanted.name)
    order = "DESC" if wanted.newest_first else "ASC"
    if wanted.marker is not None:
        clauses.append(f"(created_at, id) {'<' if wanted.newest_first else '>'} "
                       "(SELECT created_at, id FROM instances WHERE id = ?)")
        params.append(wanted.marker)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    limit = f" LIMIT {int(wanted.limit)}" if wanted.limit > 0 else ""
    try:
        rows = db.query(f"SELECT * FROM instances{where} ORDER BY created_at {order}, "
                        f"id {order}{limit}", params)
    except Exception as error:
        if getattr(error, "sqlstate", None) == BAD_REGEX:  # PostgreSQL's dialect refused it
            raise UsageError(f"Invalid regular expression for name: {wanted.name}") from None
        raise
    return [instance_from_row(row) for row in rows]


def _instance_clauses(wanted: InstanceFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = [] if wanted.include_deleted else ["vm_state != 'deleted'"]
    params: list[Any] = []
    for column, value in (("project_id", wanted.project_id), ("status", wanted.status),
                          ("host", wanted.host)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return clauses, params


def _host(row: Row) -> dict[str, Any]:
    view = {field: row[field] for field in HOST_FIELDS}
    view["statuses"] = json.loads(row["statuses"])
    return view


def hosts(db: Database) -> list[dict[str, Any]]:
    return [_host(row) for row in db.query("SELECT * FROM host_usage ORDER BY name")]


def hosts_as_of(db: Database, moment: str) -> list[dict[str, Any]]:
    """Every host that existed at `moment`, as its last change before then left it."""
    rows = db.query(
        "SELECT h.* FROM (SELECT name, max(position) AS last FROM host_usage_history"
        " WHERE updated_at <= ? GROUP BY name) latest"
        " JOIN host_usage_history h ON h.name = latest.name AND h.position = latest.last"
        " ORDER BY h.name", (moment,))
    return [_host(row) for row in rows]


def version_at(db: Database, instance_id: str, moment: str) -> int | None:
    rows = db.query("SELECT max(version) AS version FROM audit_history "
                    "WHERE instance_id = ? AND timestamp <= ?", (instance_id, moment))
    return int(rows[0]["version"]) if rows and rows[0]["version"] is not None else None


def history(db: Database, instance_id: str) -> list[dict[str, Any]]:
    rows = db.query("SELECT record FROM audit_history WHERE instance_id = ? ORDER BY version",
                    (instance_id,))
    return [json.loads(row["record"]) for row in rows]


ACTION_FIELDS = ("action", "instance_id", "instance_name", "project_id", "request_id", "user",
                 "host", "start_time", "finish_time", "result", "message", "position")
EVENT_FIELDS = ("event", "start_time", "finish_time", "result", "host", "details")


def actions(db: Database, instance_id: str) -> list[dict[str, Any]]:
    rows = db.query("SELECT * FROM audit_actions WHERE instance_id = ? ORDER BY position",
                    (instance_id,))
    return with_events(db, [{f: row[f] for f in ACTION_FIELDS} for row in rows])


def with_events(db: Database, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each action with its events, oldest first (one query per instance involved)."""
    by_key = {(a["instance_id"], a["request_id"]): a for a in found}
    for action in found:
        action["events"] = []
    for instance_id in sorted({a["instance_id"] for a in found}):
        rows = db.query("SELECT * FROM audit_events WHERE instance_id = ? ORDER BY version",
                        (instance_id,))
        for row in rows:
            owner = by_key.get((instance_id, row["request_id"]))
            if owner is not None:
                owner["events"].append({f: row[f] for f in EVENT_FIELDS})
    return found


@dataclass(frozen=True)
class AuditFilter:
    since: str | None = None
    until: str | None = None
    instance_id: str | None = None
    project_id: str | None = None
    host: str | None = None
    action: str | None = None
    user: str | None = None
    result: str | None = None
    after: int = 0  # paging: only actions whose position is greater
    limit: int = 100


def audit(db: Database, wanted: AuditFilter) -> list[dict[str, Any]]:
    """One page of actions, oldest first; the next page starts after the last position."""
    clauses: list[str] = ["position > ?"]
    params: list[Any] = [wanted.after]
    for column, value in (("instance_id", wanted.instance_id),
                          ("project_id", wanted.project_id), ("host", wanted.host),
                          ("action", wanted.action), ('"user"', wanted.user),
                          ("result", wanted.result)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if wanted.since is not None:
        clauses.append("start_time >= ?")
        params.append(wanted.since)
    if wanted.until is not None:
        clauses.append("start_time < ?")
        params.append(wanted.until)
    limit = f" LIMIT {int(wanted.limit)}" if wanted.limit > 0 else ""
    rows = db.query(f"SELECT * FROM audit_actions WHERE {' AND '.join(clauses)} "
                    f"ORDER BY position{limit}", params)
    return [{f: row[f] for f in ACTION_FIELDS} for row in rows]
