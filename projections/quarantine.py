"""Events a projection could not take, and why: the `projection_quarantine` table.

When a batch fails on an event's own fault (adapters/poison.py), the runner applies that
batch again event by event, each projection's write in a savepoint of its own; an event a
projection can't decode, fold or write is recorded here instead, and the projection goes
on past it. The event itself stays in the store, as every event does. The table is
derived like the projections: a rebuild empties a projection's records with its tables
and its replay records again what still fails (what a fix made readable is applied).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.poison import fault_reason, is_event_fault
from projections.base import Change, Projection, topics_of
from projections.db import Database, upsert_sql

Row = tuple[Any, ...]  # (position, stored id, version, topic, state): projections/reading

TABLE = "projection_quarantine"
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    projection TEXT NOT NULL, position BIGINT NOT NULL, aggregate_id TEXT NOT NULL,
    version BIGINT NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (projection, position))"""
COLUMNS = ("projection", "position", "aggregate_id", "version", "topic", "reason")


@dataclass(frozen=True)
class Quarantined:
    projection: str
    position: int  # the event's notification id
    aggregate_id: str
    version: int
    topic: str
    reason: str

    @classmethod
    def of(cls, projection: Projection, row: Row, reason: str) -> Quarantined:
        position, stored_id, version, topic, _ = row
        return cls(projection.name, position, str(uuid_of(stored_id)), version, topic, reason)

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, column) for column in COLUMNS)


class OneByOne:
    """A batch that failed on some event's own fault, applied again event by event: each
    projection's write in a savepoint of its own, and what fails is quarantined."""

    def __init__(self, db: Database, change: Callable[[Row], Change],
                 dropped: Callable[[Any], None]) -> None:
        self.db = db
        self._change = change  # the runner's: decode and fold
        self._dropped = dropped  # the runner forgets its folded copy of that aggregate
        # Aggregates (by stored id) with an event that can't be decoded or folded: none
        # of their later events can be either. Those are quarantined at once (the runner
        # skips them in its common path), rather than fail every batch they are in.
        self.unfoldable: dict[Any, str] = {}

    def apply(self, group: list[Projection], row: Row) -> list[Quarantined]:
        """One event into each projection of `group` that takes it; what it can't take."""
        takers = [p for p in group if row[3].startswith(topics_of([p]))]
        if not takers:
            return []
        try:
            if row[1] in self.unfoldable:
                raise _Unfoldable(self.unfoldable[row[1]])
            change = self._change(row)
        except Exception as error:
            if not is_event_fault(error):
                raise
            self._dropped(row[1])  # it may be half folded
            reason = str(error) if isinstance(error, _Unfoldable) else fault_reason(error)
            self.unfoldable.setdefault(
                row[1], f"an earlier event of it can't be read (position {row[0]}: {reason})")
            return [Quarantined.of(p, row, reason) for p in takers]
        failed = []
        for projection in takers:
            try:
                with self.db.savepoint():
                    projection.observe(change)
                    projection.write(self.db)
            except Exception as error:
                projection.forget()  # its caches may hold what was undone
                if not is_event_fault(error):
                    raise
                failed.append(Quarantined.of(projection, row, fault_reason(error)))
        return failed


def record(db: Database, entries: list[Quarantined]) -> None:
    """In the batch's transaction, with the positions that step past the events."""
    db.executemany(_UPSERT, [entry.row() for entry in entries])


def forget(db: Database, projections: list[str]) -> None:
    """A rebuild's: the replay records again what still fails."""
    db.executemany(f"DELETE FROM {TABLE} WHERE projection = ?", [(p,) for p in projections])


def listed(db: Database) -> list[Quarantined]:
    rows = db.query(f"SELECT * FROM {TABLE} ORDER BY position, projection")
    return [Quarantined(**{column: row[column] for column in COLUMNS}) for row in rows]


def count(db: Database) -> int:
    return int(db.query(f"SELECT count(*) AS n FROM {TABLE}")[0]["n"])


_UPSERT = upsert_sql(TABLE, COLUMNS, ("projection", "position"))


def uuid_of(stored_id: Any) -> Any:
    """The stored id as a UUID (SQLite keeps its hex), or as stored if it isn't one."""
    try:
        return stored_id if isinstance(stored_id, uuid.UUID) else uuid.UUID(str(stored_id))
    except ValueError:
        return stored_id


class _Unfoldable(ValueError):
    """An earlier event of the aggregate could not be decoded or folded."""

    def __str__(self) -> str:
        return str(self.args[0])
