"""The `audit` projection: Nova-style actions and their events, and every instance event
as `history` prints it, in SQL tables that `audit`, `actions` and `history` query.

What an action is comes from projections/audit.py (`new_action`, `apply_record`), the same
code that derives actions from a history in memory: the table and the derivation can't drift.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from domain.instance import Instance
from projections.audit import apply_record, event_record, new_action
from projections.base import Change
from projections.db import Database

ACTION_COLUMNS = (
    "instance_id", "request_id", "position", "instance_name", "project_id", "action", "user",
    "host", "start_time", "finish_time", "result", "message",
)
EVENT_COLUMNS = (
    "instance_id", "version", "request_id", "position", "event", "start_time",
    "finish_time", "result", "host", "details",
)
HISTORY_COLUMNS = (
    "instance_id", "version", "position", "timestamp", "event", "user", "request_id", "record",
)


_JSON = msgspec.json.Encoder()  # several times faster than json.dumps, same JSON


class _Seen(NamedTuple):  # a tuple: one is made per event replayed
    position: int
    instance_id: str
    instance_name: str
    project_id: str
    record: dict[str, Any]
    previous_time: str | None
    instance_host: str | None


class AuditProjection:
    name = "audit"
    tables = ("audit_actions", "audit_events", "audit_history")
    folds = (Instance,)
    columns = {"audit_actions": ACTION_COLUMNS, "audit_events": EVENT_COLUMNS,
               "audit_history": HISTORY_COLUMNS}
    schema = (
        """CREATE TABLE IF NOT EXISTS audit_actions (
            instance_id TEXT NOT NULL, request_id TEXT NOT NULL, position BIGINT NOT NULL,
            instance_name TEXT NOT NULL, project_id TEXT, action TEXT NOT NULL, "user" TEXT,
            host TEXT,
            start_time TEXT NOT NULL, finish_time TEXT, result TEXT, message TEXT,
            PRIMARY KEY (instance_id, request_id))""",
        "CREATE INDEX IF NOT EXISTS audit_actions_position ON audit_actions (position)",
        "CREATE INDEX IF NOT EXISTS audit_actions_instance ON audit_actions "
        "(instance_id, position)",
        "CREATE INDEX IF NOT EXISTS audit_actions_host ON audit_actions (host, position)",
        'CREATE INDEX IF NOT EXISTS audit_actions_user ON audit_actions ("user", position)',
        "CREATE INDEX IF NOT EXISTS audit_actions_project ON audit_actions "
        "(project_id, position)",
        "CREATE INDEX IF NOT EXISTS audit_actions_action ON audit_actions (action, position)",
        "CREATE INDEX IF NOT EXISTS audit_actions_result ON audit_actions (result, position)",
        "CREATE INDEX IF NOT EXISTS audit_actions_start ON audit_actions (start_time)",
        """CREATE TABLE IF NOT EXISTS audit_events (
            instance_id TEXT NOT NULL, version INTEGER NOT NULL, request_id TEXT NOT NULL,
            position BIGINT NOT NULL, event TEXT NOT NULL, start_time TEXT NOT NULL,
            finish_time TEXT NOT NULL, result TEXT NOT NULL, host TEXT, details TEXT)""",
        # The keys of the tables only ever appended to are unique indexes, not primary
        # keys, so that a rebuild builds them once at its end, as the other indexes.
        "CREATE UNIQUE INDEX IF NOT EXISTS audit_events_key ON audit_events "
        "(instance_id, version)",
        """CREATE TABLE IF NOT EXISTS audit_history (
            instance_id TEXT NOT NULL, version INTEGER NOT NULL, position BIGINT NOT NULL,
            timestamp TEXT NOT NULL, event TEXT NOT NULL, "user" TEXT, request_id TEXT,
            record TEXT NOT NULL)""",
        "CREATE UNIQUE INDEX IF NOT EXISTS audit_history_key ON audit_history "
        "(instance_id, version)",
    )

    def __init__(self) -> None:
        self._seen: list[_Seen] = []
        self.forget()

    def forget(self, empty: bool = False) -> None:
        self._seen = []
        self._complete = empty
        # Only an instance's latest action takes new events: a request is accepted only
        # when the instance is idle, so the one before it has had its last event.
        self._latest: dict[str, dict[str, Any]] = {}

    def observe(self, change: Change) -> None:
        state = change.state
        if isinstance(state, Instance):
            self._seen.append(_Seen(
                change.position, change.aggregate_id, state.name, state.project_id,
                event_record(change.event, change.at), change.previous_at, state.host,
            ))

    def write(self, db: Database) -> None:
        actions: dict[tuple[str, str], dict[str, Any]] = {}
        events: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        for seen in self._seen:
            record = seen.record
            action = self._action_for(db, seen)
            step = apply_record(action, record, seen.previous_time, seen.instance_host)
            actions[(seen.instance_id, action["request_id"])] = action
            if step is not None:
                events.append((seen.instance_id, record["version"], action["request_id"],
                               seen.position, step["event"], step["start_time"],
                               step["finish_time"], step["result"], step["host"],
                               step["details"]))
            history.append((seen.instance_id, record["version"], seen.position,
                            record["timestamp"], record["event"], record["user"],
                            record["request_id"], _JSON.encode(record).decode()))
        self._seen = []
        db.replace_many("audit_actions", ACTION_COLUMNS, ("instance_id", "request_id"),
                        [tuple(a[column] for column in ACTION_COLUMNS) for a in actions.values()])
        db.insert_many("audit_events", EVENT_COLUMNS, events)
        db.insert_many("audit_history", HISTORY_COLUMNS, history)

    def _action_for(self, db: Database, seen: _Seen) -> dict[str, Any]:
        request_id = seen.record["request_id"] or ""
        latest = self._latest.get(seen.instance_id)
        if latest is None or latest["request_id"] != request_id:
            latest = None if self._complete else self._stored_action(db, seen, request_id)
            if latest is None:
                latest = new_action(seen.record) | {
                    "instance_id": seen.instance_id, "position": seen.position}
            self._latest[seen.instance_id] = latest
        latest["instance_name"] = seen.instance_name
        latest["project_id"] = seen.project_id
        return latest

    def _stored_action(self, db: Database, seen: _Seen, request_id: str) -> dict[str, Any] | None:
        rows = db.query("SELECT * FROM audit_actions WHERE instance_id = ? AND request_id = ?",
                        (seen.instance_id, request_id))
        return dict(rows[0]) if rows else None
