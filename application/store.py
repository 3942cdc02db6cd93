"""Read commands never create a store: a mistyped path or database name is "no such
store" (exit 3), not an empty fleet. Commands that record may create one."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from adapters.eventstore import ShelfApplication, StoreURL
from domain.errors import NotFound
from projections.db import Database

# eventsourcing's events table: named after the application on PostgreSQL only.
EVENTS_TABLE = {"sqlite": "stored_events", "postgres": f"{ShelfApplication.name}_events"}


class NoSuchStore(NotFound):
    """The store URL names no shelf store (exit 3)."""


def require_existing_store(store: StoreURL, db: Database) -> None:
    """Raise NoSuchStore unless `store` holds shelf's events table. On PostgreSQL it asks
    through `db`, whose connection the command then goes on using."""
    if not _exists(store, db):
        how = ("`shelf host add` makes one" if store.backend == "sqlite"
               else "create the database, then `shelf host add` makes the store in it")
        raise NoSuchStore(f"no such store: {store.redacted} ({how})")


def _exists(store: StoreURL, db: Database) -> bool:
    if store.backend == "sqlite":
        return _sqlite_has_events(store)
    try:
        rows = db.query("SELECT to_regclass(?) IS NOT NULL AS present", (EVENTS_TABLE["postgres"],))
    except Exception as error:  # psycopg's OperationalError, imported only for PostgreSQL
        if f'database "{store.pg_dbname}" does not exist' in str(error):
            return False
        raise
    return bool(rows[0]["present"])


def _sqlite_has_events(store: StoreURL) -> bool:
    """Opened read-only: asking must not make the file."""
    assert store.sqlite_path is not None
    path = store.sqlite_path.absolute()
    if not path.is_file():
        return False
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                             (EVENTS_TABLE["sqlite"],)).fetchone()
    return found is not None
