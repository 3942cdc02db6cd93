"""Tell an event that can't be read or projected from a store that is failing.

A stored event may hold what the code can't take (written by an older version, or by a
bug): state that isn't JSON, a value out of a column's range, a row that breaks a
constraint. Such an error stays with the event, however often it is tried, and the
readers step past it (projections/quarantine.py, application/worker.py). Every other error (a
lost connection, a locked or full database, a failpoint) is the store's or the host's,
and is retried as before: only the errors listed here mark an event, so a PostgreSQL
restart never quarantines anything.
"""

from __future__ import annotations

import sqlite3
import sys

import msgspec
from eventsourcing import persistence
from eventsourcing.utils import TopicError

# Decoding and folding (bad JSON or UTF-8, an unknown topic, a missing or mistyped
# attribute) and writing (a value SQLite can't bind, a constraint the row breaks).
_EVENT_FAULTS: tuple[type[BaseException], ...] = (
    ValueError, ArithmeticError, TypeError, LookupError, AttributeError,
    msgspec.MsgspecError, TopicError, sqlite3.IntegrityError, sqlite3.DataError,
    persistence.DataError, persistence.IntegrityError,
)


def is_event_fault(error: BaseException) -> bool:
    """Whether `error` comes from the event being read or written, not from the store."""
    if isinstance(error, _EVENT_FAULTS):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded only by a PostgreSQL store
    return psycopg is not None and isinstance(error, psycopg.DataError | psycopg.IntegrityError)


REASON_CHARS = 300


def fault_reason(error: BaseException) -> str:
    """One line: the error's class and the first line of its message."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."
