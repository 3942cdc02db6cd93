"""The read models' schema: the projections' tables, tracking rows and indexes.

Made as the projections declare them, under the schema lock (PostgreSQL), by whichever
process looks first. A replay defers the indexes and builds them at its end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from adapters.eventstore import SCHEMA_LOCK_KEY
from domain.errors import ShelfError
from projections import quarantine
from projections.base import Projection
from projections.db import Database

TRACKING_SCHEMA = """CREATE TABLE IF NOT EXISTS projection_tracking (
    name TEXT PRIMARY KEY, position BIGINT NOT NULL)"""


class Schema:
    """`rebuild_running_elsewhere()`: whether another process's rebuild holds the
    indexes back; `dropped(name)`: that projection's tables were dropped and its position
    set back to 0."""

    def __init__(self, db: Database, projections: Sequence[Projection],
                 rebuild_running_elsewhere: Callable[[], bool],
                 dropped: Callable[[str], object]) -> None:
        self.db, self.projections = db, projections
        self.rebuild_running_elsewhere = rebuild_running_elsewhere
        self.dropped = dropped
        self.ready = False
        self.indexes_deferred = False  # a replay builds them at its end

    def ensure(self) -> None:
        """Tables, tracking rows and (unless a replay has deferred them) indexes."""
        if self.ready:
            return
        # A rebuild in another process builds the indexes it dropped when it ends.
        defer = self.indexes_deferred or self.rebuild_running_elsewhere()
        with self.db.transaction():
            self._lock()
            self.db.execute(TRACKING_SCHEMA)
            self.db.execute(quarantine.SCHEMA)
            self._drop_outdated_tables()
            existing = self._index_names_present()
            for projection in self.projections:
                for statement in projection.schema:
                    if not _is_index(statement):
                        self.db.execute(statement)
                    elif not defer and _index_name(statement) not in existing:
                        self._create_index(statement)  # (asked first: CREATE ... IF NOT
                        # EXISTS would lock the table even when the index is there)
                self.db.execute("INSERT INTO projection_tracking (name, position) VALUES (?, 0) "
                                "ON CONFLICT (name) DO NOTHING", (projection.name,))
        # Deferred for another's rebuild: look again next time (it may have died).
        self.ready = self.indexes_deferred or not defer

    def _drop_outdated_tables(self) -> None:
        """A projection whose tables an older shelf made, without a column this one
        writes (its `columns`, when it declares them): its tables are dropped here, made
        anew below, and its position goes back to 0, so the next catch-up replays it."""
        for projection in self.projections:
            wanted: dict[str, Sequence[str]] = getattr(projection, "columns", {})
            present = self._columns_present(list(wanted))
            if all(set(columns) <= present[table] for table, columns in wanted.items()
                   if present[table]):
                continue
            for table in projection.tables:
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
            self.db.execute("UPDATE projection_tracking SET position = 0 WHERE name = ?",
                            (projection.name,))
            self.dropped(projection.name)

    def _columns_present(self, tables: list[str]) -> dict[str, set[str]]:
        """Each table's column names (none for a table that doesn't exist)."""
        found: dict[str, set[str]] = {table: set() for table in tables}
        if not tables:
            return found
        if self.db.backend == "postgres":
            rows = self.db.query(
                "SELECT table_name AS t, column_name AS c FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = ANY(?)", (tables,))
        else:
            rows = [{"t": table, "c": row["name"]} for table in tables
                    for row in self.db.query("SELECT name FROM pragma_table_info(?)", (table,))]
        for row in rows:
            found[row["t"]].add(row["c"])
        return found

    def ensure_tables(self) -> None:
        """The schema without building missing indexes: a rebuild drops them and builds
        them at its end, from rows it has just replayed. (So a rebuild also mends a table
        whose key could not be built.)"""
        self.indexes_deferred = True
        try:
            self.ensure()
        finally:
            self.indexes_deferred = self.ready = False

    def _index_names_present(self) -> set[str]:
        if self.db.backend == "postgres":
            rows = self.db.query("SELECT indexname AS name FROM pg_indexes "
                                 "WHERE schemaname = current_schema()")
        else:
            rows = self.db.query("SELECT name FROM sqlite_master WHERE type = 'index'")
        return {row["name"] for row in rows}

    def _create_index(self, statement: str) -> None:
        """Tables made before their key became a unique index have that key as their
        primary key: on PostgreSQL the primary key is dropped once the index is there
        (keeping both would cost every insert twice); SQLite can't drop it, so there the
        primary key goes on serving as the key and the index is not made."""
        table = _unique_index_table(statement)
        primary = self._primary_key_columns(table) if table is not None else []
        if primary and primary == _index_columns(statement):
            if self.db.backend == "sqlite":
                return
            self._execute_index(statement)
            self.db.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey")
            return
        self._execute_index(statement)

    def _execute_index(self, statement: str) -> None:
        try:
            self.db.execute(statement)
        except Exception as error:
            table = _unique_index_table(statement)
            if table is None:
                raise
            # Rows with one key twice (only a bug could store them while a rebuild had
            # the key dropped): say what mends it, rather than fail every command.
            raise ShelfError(
                f"projection table {table} holds two rows with one key, so its index "
                f"{_index_name(statement)} can't be built ({str(error).splitlines()[0]}); "
                f"`shelf projections rebuild` replays it from the events") from error

    def _primary_key_columns(self, table: str) -> list[str]:
        if self.db.backend == "sqlite":
            rows = self.db.query("SELECT name FROM pragma_table_info(?) WHERE pk > 0 "
                                 "ORDER BY pk", (table,))
        else:
            rows = self.db.query(
                "SELECT a.attname AS name FROM pg_constraint c "
                "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n) "
                "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
                "WHERE c.conname = ? AND c.conrelid = to_regclass(?) ORDER BY k.n",
                (f"{table}_pkey", table))
        return [row["name"] for row in rows]

    def _lock(self) -> None:
        if self.db.backend == "postgres":  # see SCHEMA_LOCK_KEY
            self.db.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))

    def defer_indexes(self) -> None:
        """A replay is starting: until build_indexes, the schema leaves them out."""
        self.ready, self.indexes_deferred = False, True

    def build_indexes(self) -> None:
        """One index per transaction: other processes wait for the schema lock at most
        one index build, not all of them. Should this fail, the next ensure_schema
        (any command's first catch-up) builds what is missing."""
        self.ready, self.indexes_deferred = False, False
        for projection in self.projections:
            for statement in filter(_is_index, projection.schema):
                with self.db.transaction():
                    self._lock()
                    if _index_name(statement) not in self._index_names_present():
                        self._create_index(statement)
        self.ensure()


def _is_index(statement: str) -> bool:
    return statement.split()[:3] in (["CREATE", "INDEX", "IF"], ["CREATE", "UNIQUE", "INDEX"])


def index_names(projection: Projection) -> list[str]:
    return [_index_name(statement) for statement in projection.schema if _is_index(statement)]


def _index_name(statement: str) -> str:
    """CREATE [UNIQUE] INDEX IF NOT EXISTS <name> ON ..."""
    return _word_after(statement, "EXISTS")


def _unique_index_table(statement: str) -> str | None:
    """The table of a CREATE UNIQUE INDEX IF NOT EXISTS <name> ON <table> statement."""
    if statement.split()[:3] != ["CREATE", "UNIQUE", "INDEX"]:
        return None
    return _word_after(statement, "ON")


def _index_columns(statement: str) -> list[str]:
    """The column names of CREATE ... INDEX ... ON <table> (a, "b", c)."""
    inside = statement[statement.index("(") + 1:statement.rindex(")")]
    return [column.strip().strip('"') for column in inside.split(",")]


def _word_after(statement: str, word: str) -> str:
    words = statement.split()
    return words[words.index(word) + 1]
