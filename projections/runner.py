"""Catch the projections up with the event store, rebuild them, report their lag.

Each projection has its own tracking position. Projections at the same position share one
read and one decode of each batch, and write their rows and their new positions in one
transaction, under a row lock on their tracking rows: a crash mid-batch leaves rows and
positions together at the old position, and two processes can't both apply one batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.application import Application

from adapters.eventstore import SCHEMA_LOCK_KEY
from domain.errors import UsageError
from domain.host import Host
from domain.instance import Instance
from projections.audit_log import AuditProjection
from projections.base import Change, Projection, utc_text
from projections.db import Database
from projections.instances import InstancesProjection
from projections.usage import HostUsageProjection

BATCH = 1000
FOLDED_TOPICS = (f"{Instance.__module__}:Instance.", f"{Host.__module__}:Host.")

TRACKING_SCHEMA = """CREATE TABLE IF NOT EXISTS projection_tracking (
    name TEXT PRIMARY KEY, position BIGINT NOT NULL)"""


Progress = Callable[[int, int], None]


def all_projections() -> list[Projection]:
    return [InstancesProjection(), HostUsageProjection(), AuditProjection()]


@dataclass(frozen=True)
class Status:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return self.head - self.position


class Failpoint(Protocol):
    """`projection:batch` is hit inside the batch transaction after the rows are written."""

    def hit(self, name: str) -> None: ...


class NoFailpoint:
    def hit(self, name: str) -> None:
        return None


class ProjectionRunner:
    def __init__(self, app: Application[uuid.UUID], db: Database,
                 projections: Sequence[Projection] | None = None,
                 failpoint: Failpoint | None = None) -> None:
        self.app, self.db = app, db
        self.projections = list(projections if projections is not None else all_projections())
        self.failpoint = failpoint or NoFailpoint()
        self._aggregates: dict[uuid.UUID, Any] = {}
        self._last_at: dict[uuid.UUID, str] = {}  # each cached aggregate's last event time
        self._written: dict[str, int] = {}  # what this runner last wrote: its caches' basis
        self._schema_ready = False

    # ---- schema and positions ---------------------------------------------------------

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self.db.transaction():
            if self.db.backend == "postgres":  # see SCHEMA_LOCK_KEY
                self.db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
            self.db.execute(TRACKING_SCHEMA)
            for projection in self.projections:
                for statement in projection.schema:
                    self.db.execute(statement)
                self.db.execute("INSERT INTO projection_tracking (name, position) VALUES (?, 0) "
                                "ON CONFLICT (name) DO NOTHING", (projection.name,))
        self._schema_ready = True

    def positions(self) -> dict[str, int]:
        self.ensure_schema()
        rows = self.db.query("SELECT name, position FROM projection_tracking")
        found = {row["name"]: int(row["position"]) for row in rows}
        return {p.name: found.get(p.name, 0) for p in self.projections}

    def position(self) -> int:
        """Where every projection has got to at least."""
        return min(self.positions().values())

    def status(self) -> list[Status]:
        head = self.app.recorder.max_notification_id() or 0
        return [Status(name, position, head) for name, position in self.positions().items()]

    # ---- catching up ------------------------------------------------------------------

    def catch_up(self, batch: int = BATCH, progress: Progress | None = None) -> int:
        """Apply every event recorded since each projection's position; return how many
        events were applied (an event counts once however many projections took it).
        `progress(position, head)` is called after each batch written."""
        applied = 0
        head = 0
        while True:
            positions = self.positions()
            start = min(positions.values())
            group = [p for p in self.projections if positions[p.name] == start]
            notifications = self.app.recorder.select_notifications(
                start, batch, inclusive_of_start=False)
            if not notifications:
                return applied
            if self._apply_batch(group, start, notifications):
                applied += len(notifications)
                if progress is not None:
                    head = head or self.app.recorder.max_notification_id() or 0
                    progress(notifications[-1].id, head)

    def _apply_batch(self, group: list[Projection], start: int, notifications: Any) -> bool:
        for projection in group:
            if self._written.get(projection.name) != start:  # caches from another basis
                projection.forget(empty=start == 0)
        try:
            for change in self._changes(notifications):
                for projection in group:
                    projection.observe(change)
            end = notifications[-1].id
            with self.db.transaction():
                if self._locked_positions(group) != {p.name: start for p in group}:
                    raise _Moved
                for projection in group:
                    projection.write(self.db)
                self.failpoint.hit("projection:batch")
                self.db.executemany("UPDATE projection_tracking SET position = ? WHERE name = ?",
                                    [(end, p.name) for p in group])
        except BaseException as error:
            for projection in group:
                projection.forget()
                self._written.pop(projection.name, None)
            if isinstance(error, _Moved):  # another process applied it: read again
                return False
            raise
        self._written.update((p.name, end) for p in group)
        return True

    def _locked_positions(self, group: Iterable[Projection]) -> dict[str, int]:
        lock = " FOR UPDATE" if self.db.backend == "postgres" else ""  # SQLite: BEGIN IMMEDIATE
        names = [p.name for p in group]
        rows = self.db.query(
            f"SELECT name, position FROM projection_tracking "
            f"WHERE name IN ({', '.join('?' * len(names))}){lock}", names)
        return {row["name"]: int(row["position"]) for row in rows}

    def _changes(self, notifications: Any) -> Iterable[Change]:
        for notification in notifications:
            if not notification.topic.startswith(FOLDED_TOPICS):
                continue  # names, addresses, the host catalog: no projection reads them
            event: Any = self.app.mapper.to_domain_event(notification)
            at = str(utc_text(event.timestamp))
            previous_at, state = self._fold(event)
            self._last_at[event.originator_id] = at
            yield Change(notification.id, event, state, str(event.originator_id), at,
                         previous_at)

    def _fold(self, event: Any) -> tuple[str | None, Any]:
        """(when the aggregate was last changed before `event`, the aggregate after it)."""
        version = event.originator_version
        cached = self._aggregates.get(event.originator_id)
        if version == 1:
            previous, state = None, event.mutate(None)
        elif cached is not None and cached.version == version - 1:
            previous = self._last_at.get(event.originator_id) or utc_text(cached.modified_on)
            state = event.mutate(cached)
        else:
            before: Any = self.app.repository.get(event.originator_id, version=version - 1)
            previous, state = utc_text(before.modified_on), event.mutate(before)
        if isinstance(state, Instance | Host):
            self._aggregates[event.originator_id] = state
        return previous, state

    # ---- rebuilding -------------------------------------------------------------------

    def rebuild(self, names: Sequence[str] = (), progress: Progress | None = None) -> int:
        """Empty the named projections (all when none named) and replay every event."""
        chosen = self._chosen(names)
        self.ensure_schema()
        with self.db.transaction():
            # Lock the tracking rows first, as a batch does: a batch being written now
            # commits before these DELETEs run, so they see and remove its rows too.
            self._locked_positions(chosen)
            for projection in chosen:
                for table in projection.tables:
                    self.db.execute(f"DELETE FROM {table}")
            self.db.executemany("UPDATE projection_tracking SET position = 0 WHERE name = ?",
                                [(p.name,) for p in chosen])
        for projection in chosen:
            projection.forget(empty=True)
            self._written[projection.name] = 0
        self._aggregates.clear()
        self._last_at.clear()
        return self.catch_up(batch=5 * BATCH, progress=progress)

    def _chosen(self, names: Sequence[str]) -> list[Projection]:
        known = {p.name: p for p in self.projections}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError(f"no such projection: {', '.join(unknown)} "
                             f"(there are: {', '.join(known)})")
        return [known[name] for name in names] if names else list(self.projections)


class _Moved(Exception):
    """Another process moved a position while this batch was being prepared."""
