"""One small SQL interface over SQLite and PostgreSQL for the projections.

SQL is written once with `?` placeholders and `ON CONFLICT` upserts, which both databases
understand; for PostgreSQL the placeholders become `%s`.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

from adapters.eventstore import StoreURL, local_writer

if TYPE_CHECKING:
    import psycopg

Row = dict[str, Any]
T = TypeVar("T")


class Database:
    def __init__(self, store: StoreURL) -> None:
        self.store = store
        self.backend = store.backend
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        self._transactions = 0  # how deep inside transaction(): no read is retried there

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
                self._sqlite.create_function("regexp", 2, _regexp, deterministic=True)
            return self._sqlite
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = _psycopg().connect(self.store.psycopg_conninfo("projections"),
                                         autocommit=True)
            if self.store.pg_schema:
                self._pg.execute(f'SET search_path TO "{self.store.pg_schema}"')
        return self._pg

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Every statement inside commits together, or none does."""
        conn = self._connect()
        if self.backend == "sqlite":
            with local_writer(self.store):  # this process's writers take turns at once
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # also when COMMIT failed (disk full, I/O)
                        with suppress(sqlite3.Error):  # keep the first error, not this one
                            conn.execute("ROLLBACK")
                    raise
        else:
            self._transactions += 1
            try:
                with conn.transaction():
                    yield self
            finally:
                self._transactions -= 1

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside `transaction()`: the statements inside are undone alone if they fail."""
        conn = self._connect()
        if self.backend == "postgres":
            with conn.transaction():  # nested: psycopg makes it a savepoint
                yield
            return
        conn.execute("SAVEPOINT shelf_savepoint")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO shelf_savepoint")
            raise
        finally:
            conn.execute("RELEASE shelf_savepoint")

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

    def replace_many(self, table: str, columns: Sequence[str], keys: Sequence[str],
                     rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows, replacing the rows with the same key (`keys`: the primary key's
        columns; at most one row per key). PostgreSQL: one DELETE for all the keys, then
        COPY, instead of a round trip per row; SQLite: an upsert per row."""
        if not rows:
            return
        if self.backend == "sqlite":
            self.executemany(upsert_sql(table, columns, keys), rows)
            return
        places = [columns.index(key) for key in keys]
        self.delete_many(table, keys, [tuple(row[place] for place in places) for row in rows])
        self.insert_many(table, columns, rows)

    def delete_many(self, table: str, keys: Sequence[str],
                    values: Sequence[Sequence[str]]) -> None:
        """Delete the rows whose text key columns `keys` hold one of `values`: in one
        statement on PostgreSQL."""
        if not values:
            return
        key_list = ", ".join(f'"{key}"' for key in keys)
        if self.backend == "sqlite":
            where = " AND ".join(f'"{key}" = ?' for key in keys)
            self.executemany(f"DELETE FROM {table} WHERE {where}", values)
            return
        unnest = ", ".join("%s::text[]" for _ in keys)
        self._connect().execute(
            f"DELETE FROM {table} WHERE ({key_list}) IN (SELECT * FROM unnest({unnest}))",
            [[value[i] for value in values] for i in range(len(keys))])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        def read() -> list[Row]:
            cursor = self._connect().execute(self._sql(sql), params)
            names = [column[0] for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return self._read_again_if_reconnected(read)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Plain tuples, PostgreSQL's in binary: for reading many rows fast."""
        def read() -> list[tuple[Any, ...]]:
            conn = self._connect()
            if self.backend == "sqlite":
                return list(conn.execute(sql, params).fetchall())
            with conn.cursor(binary=True) as cursor:
                cursor.execute(self._sql(sql), params)
                return list(cursor.fetchall())

        return self._read_again_if_reconnected(read)

    def _read_again_if_reconnected(self, read: Callable[[], T]) -> T:
        """A read on a PostgreSQL connection the server dropped (a restart, a failover, an
        idle timeout) is made once more on a new one, as oslo.db retries on disconnect;
        never inside a transaction, whose earlier statements went with the session."""
        try:
            return read()
        except Exception as error:
            lost = (self.backend == "postgres" and self._transactions == 0
                    and self._pg is not None and self._pg.broken
                    and isinstance(error, _psycopg().OperationalError))
            if not lost:
                raise
        return read()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            self._pg.close()
            self._pg = None


def upsert_sql(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    """INSERT ... ON CONFLICT DO UPDATE, which SQLite and PostgreSQL both understand."""
    quoted = [f'"{column}"' for column in columns]
    key_list = ", ".join(f'"{key}"' for key in keys)
    updates = ", ".join(f"{q} = excluded.{q}" for q, c in zip(quoted, columns, strict=True)
                        if c not in keys)
    return (
        f"INSERT INTO {table} ({', '.join(quoted)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT ({key_list}) DO UPDATE SET {updates}"
    )


def _regexp(pattern: str, value: str | None) -> bool:
    """SQLite's `value REGEXP pattern`: a match anywhere, as PostgreSQL's `~` finds one."""
    return value is not None and re.search(pattern, value) is not None


def _psycopg() -> Any:
    """psycopg, imported on first use: a SQLite store never pays for it."""
    import psycopg

    return psycopg
