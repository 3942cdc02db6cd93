"""One small SQL interface over SQLite and PostgreSQL for the projections.

SQL is written once with `?` placeholders and `ON CONFLICT` upserts, which both databases
understand; for PostgreSQL the placeholders become `%s`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from adapters.eventstore import StoreURL

if TYPE_CHECKING:
    import psycopg

Row = dict[str, Any]


class Database:
    def __init__(self, store: StoreURL) -> None:
        self.store = store
        self.backend = store.backend
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.backend == "postgres" else sql

    def _connect(self) -> Any:
        if self.backend == "sqlite":
            if self._sqlite is None:
                assert self.store.sqlite_path is not None
                self._sqlite = sqlite3.connect(
                    self.store.sqlite_path, timeout=30, isolation_level=None,
                    check_same_thread=False,
                )
                self._sqlite.execute("PRAGMA journal_mode=WAL")
            return self._sqlite
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = _psycopg().connect(self.store.psycopg_conninfo(), autocommit=True)
            if self.store.pg_schema:
                self._pg.execute(f'SET search_path TO "{self.store.pg_schema}"')
        return self._pg

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Every statement inside commits together, or none does."""
        conn = self._connect()
        if self.backend == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also when COMMIT itself failed (disk full, I/O)
                    with suppress(sqlite3.Error):  # keep the first error, not this one
                        conn.execute("ROLLBACK")
                raise
        else:
            with conn.transaction():
                yield self

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._connect().execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        conn = self._connect()
        if self.backend == "sqlite":
            conn.executemany(sql, rows)
        else:
            with conn.cursor() as cursor:
                cursor.executemany(self._sql(sql), rows)

    def insert_many(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """Append rows: PostgreSQL's COPY (many times faster than INSERTs), SQLite's
        executemany. Same transaction as everything else in `transaction()`."""
        if not rows:
            return
        quoted = ", ".join(f'"{column}"' for column in columns)
        conn = self._connect()
        if self.backend == "sqlite":
            conn.executemany(f"INSERT INTO {table} ({quoted}) "
                             f"VALUES ({', '.join('?' * len(columns))})", rows)
            return
        with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = self._connect().execute(self._sql(sql), params)
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None


def _psycopg() -> Any:
    """psycopg, imported on first use: a SQLite store never pays for it."""
    import psycopg

    return psycopg
