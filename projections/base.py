"""What every projection is: SQL tables fed with the stored events, in order.

The runner decodes each stored event once and shows every projection the same `Change`s,
one at a time, while the aggregate is as the event left it (`observe` takes what it needs
then: the aggregate object moves on with the next event). Then `write` puts the rows in the
runner's transaction, which also moves the projection's tracking position, so rows and
position can never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeGuard

from projections.db import Database


class Change(NamedTuple):
    """One stored event with the aggregate as it stood right after it (a tuple: one is
    made per event replayed, and tuples are the cheapest to make)."""

    position: int  # the event's notification id: its place in the whole store
    event: Any
    state: Any
    aggregate_id: str
    at: str  # the event's timestamp as utc_text() writes it (formatted once, shared)
    previous_at: str | None  # the aggregate's previous event's, likewise


class Projection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def folds(self) -> tuple[type, ...]:
        """The aggregate classes whose events this projection observes."""

    @property
    def schema(self) -> tuple[str, ...]:
        """CREATE statements, idempotent."""

    @property
    def tables(self) -> tuple[str, ...]:
        """What a rebuild empties."""

    def observe(self, change: Change) -> None:
        """Take what this projection needs from one change; no database work here."""

    def write(self, db: Database) -> None:
        """Write what was observed since the last write (inside the runner's transaction)."""

    def forget(self, empty: bool = False) -> None:
        """Drop what was observed and what is cached from the tables: the batch was not
        written, or another writer may have changed the tables meanwhile. `empty`: the
        tables are known to be empty, so a row not cached is a row that doesn't exist."""


def utc_text(moment: datetime | None) -> str | None:
    """One fixed-width UTC form, so that timestamps compare correctly as text in SQL."""
    if moment is None:
        return None
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def is_utc_text(text: str | None) -> TypeGuard[str]:
    """Whether `text` is already in utc_text's form (eventsourcing stores a UTC timestamp
    with microseconds that way): then it need not be parsed and formatted again."""
    return (text is not None and len(text) == 32 and text[10] == "T" and text[19] == "."
            and text.endswith("+00:00"))


def topics_of(group: Iterable[Projection]) -> tuple[str, ...]:
    """The topic prefixes of the events of the aggregates the group folds."""
    return tuple(dict.fromkeys(f"{cls.__module__}:{cls.__qualname__}."
                               for projection in group for cls in projection.folds))
