"""Per-instance leases, so two `serve` processes on one store never drive one instance at
once (its hypervisor side effects would run twice). A lease dies with its holder:
PostgreSQL advisory locks end with the session, SQLite's lock files with the process.
"""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from adapters.eventstore import StoreURL

if TYPE_CHECKING:
    import psycopg


class InstanceLeases:
    def __init__(self, store: StoreURL) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._pg: psycopg.Connection[Any] | None = None

    @contextmanager
    def hold(self, instance_id: uuid.UUID) -> Iterator[bool]:
        """Yield True while this process holds the instance's lease, False if another does."""
        if self.store.backend == "postgres":
            with self._pg_lease(instance_id) as held:
                yield held
        else:
            with self._file_lease(instance_id) as held:
                yield held

    @contextmanager
    def _pg_lease(self, instance_id: uuid.UUID) -> Iterator[bool]:
        key = (instance_id.int >> 64) - (1 << 63)  # a signed 64-bit advisory lock key
        with self._lock:
            conn = self._connection()
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        held = bool(row and row[0])
        try:
            yield held
        finally:
            if held:
                with self._lock:
                    if not conn.closed and not conn.broken:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed or self._pg.broken:
            self._pg = _psycopg().connect(self.store.psycopg_conninfo(), autocommit=True)
        return self._pg

    @contextmanager
    def _file_lease(self, instance_id: uuid.UUID) -> Iterator[bool]:
        assert self.store.sqlite_path is not None
        directory = self.store.sqlite_path.parent / f".{self.store.sqlite_path.name}.leases"
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / str(instance_id), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None


def _psycopg() -> Any:
    """psycopg, imported on first use: a SQLite store never pays for it."""
    import psycopg

    return psycopg
