"""Catch the read models up with the event store.

Each batch of notifications is applied and the tracking position written in one
transaction, so a crash mid-batch leaves rows and position together at the old position:
nothing is counted twice or skipped.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import Application

from adapters.eventstore import SCHEMA_LOCK_KEY
from domain.host import Host
from domain.instance import Instance
from projections.db import Database
from projections.views import (
    HOST_COLUMNS,
    INSTANCE_COLUMNS,
    host_view,
    instance_row,
    instance_view,
)

BATCH = 500
TRACKING = "state"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS projection_tracking (
        name TEXT PRIMARY KEY, position BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS instances (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, vm_state TEXT NOT NULL,
        task_state TEXT, power_state TEXT NOT NULL, host TEXT, vcpus INTEGER NOT NULL,
        memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, volume_backed INTEGER NOT NULL,
        image_id TEXT, ip TEXT, mac TEXT, shelved_at TEXT, shelved_image_id TEXT,
        shelved_host TEXT, fault TEXT, action TEXT, request_id TEXT, "user" TEXT,
        created_at TEXT, updated_at TEXT, version INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS instances_name ON instances (name)",
    "CREATE INDEX IF NOT EXISTS instances_task ON instances (task_state)",
    "CREATE INDEX IF NOT EXISTS instances_vm_state ON instances (vm_state)",
    """CREATE TABLE IF NOT EXISTS host_usage (
        name TEXT PRIMARY KEY, uri TEXT NOT NULL, vcpus INTEGER NOT NULL,
        memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, vcpus_used INTEGER NOT NULL,
        memory_mb_used INTEGER NOT NULL, disk_gb_used INTEGER NOT NULL,
        instances INTEGER NOT NULL)""",
)
TABLES = ("instances", "host_usage")


def _upsert(table: str, columns: tuple[str, ...], key: str) -> str:
    quoted = [f'"{column}"' for column in columns]
    updates = ", ".join(f"{q} = excluded.{q}" for q in quoted if q != f'"{key}"')
    return (
        f"INSERT INTO {table} ({', '.join(quoted)}) VALUES ({', '.join('?' * len(columns))}) "
        f'ON CONFLICT ("{key}") DO UPDATE SET {updates}'
    )


UPSERT_INSTANCE = _upsert("instances", INSTANCE_COLUMNS, "id")
UPSERT_HOST = _upsert("host_usage", HOST_COLUMNS, "name")


class StateProjector:
    """The `instances` and `host_usage` read models."""

    def __init__(self, app: Application[uuid.UUID], db: Database) -> None:
        self.app, self.db = app, db
        self._aggregates: dict[uuid.UUID, Any] = {}
        self._schema_ready = False

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self.db.transaction():
            if self.db.backend == "postgres":  # see SCHEMA_LOCK_KEY
                self.db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
            for statement in SCHEMA:
                self.db.execute(statement)
            self.db.execute(
                "INSERT INTO projection_tracking (name, position) VALUES (?, 0) "
                "ON CONFLICT (name) DO NOTHING", (TRACKING,),
            )
        self._schema_ready = True

    def position(self) -> int:
        self.ensure_schema()
        rows = self.db.query(
            "SELECT position FROM projection_tracking WHERE name = ?", (TRACKING,)
        )
        return int(rows[0]["position"]) if rows else 0

    def catch_up(self) -> int:
        """Apply every event recorded since the tracked position; return how many."""
        applied = 0
        while True:
            start = self.position()
            notifications = self.app.recorder.select_notifications(
                start, BATCH, inclusive_of_start=False
            )
            if not notifications:
                return applied
            if self._apply_batch(start, notifications):
                applied += len(notifications)

    def _apply_batch(self, start: int, notifications: Any) -> bool:
        """Write the batch unless another process moved the position meanwhile."""
        instances: dict[str, tuple[Any, ...]] = {}
        hosts: dict[str, tuple[Any, ...]] = {}
        for notification in notifications:
            event = self.app.mapper.to_domain_event(notification)
            state = self._state_after(event)
            if isinstance(state, Instance):
                instances[str(state.id)] = instance_row(instance_view(state))
            elif isinstance(state, Host):
                view = host_view(state)
                hosts[view["name"]] = tuple(view[column] for column in HOST_COLUMNS)
        with self.db.transaction():
            if self._locked_position() != start:
                return False
            self.db.executemany(UPSERT_INSTANCE, list(instances.values()))
            self.db.executemany(UPSERT_HOST, list(hosts.values()))
            self.db.execute(
                "UPDATE projection_tracking SET position = ? WHERE name = ?",
                (notifications[-1].id, TRACKING),
            )
        return True

    def _locked_position(self) -> int:
        lock = " FOR UPDATE" if self.db.backend == "postgres" else ""  # SQLite: BEGIN IMMEDIATE
        rows = self.db.query(
            f"SELECT position FROM projection_tracking WHERE name = ?{lock}", (TRACKING,)
        )
        return int(rows[0]["position"])

    def _state_after(self, event: Any) -> Any:
        """The aggregate as it was right after `event` (cached; exact by version)."""
        cached = self._aggregates.get(event.originator_id)
        if event.originator_version == 1:
            state = event.mutate(None)
        elif cached is not None and cached.version == event.originator_version - 1:
            state = event.mutate(cached)
        else:
            state = self.app.repository.get(
                event.originator_id, version=event.originator_version
            )
        if isinstance(state, Instance | Host):
            self._aggregates[event.originator_id] = state
        return state

    def rebuild(self) -> int:
        self.ensure_schema()
        with self.db.transaction():
            for table in TABLES:
                self.db.execute(f"DELETE FROM {table}")
            self.db.execute("UPDATE projection_tracking SET position = 0 WHERE name = ?",
                            (TRACKING,))
        self._aggregates.clear()
        return self.catch_up()
