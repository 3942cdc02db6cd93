"""Per-instance leases, so two `serve` processes on one store never drive one instance at
once (its hypervisor side effects would run twice). A lease dies with its holder:
PostgreSQL advisory locks end with the session; on SQLite, a lock on one byte of a lease
file beside the database (the instance's id picks the byte) ends with the process.

The SQLite leases are open-file-description locks (Linux): owned by the open file, not
by the process as POSIX record locks are, so two `InstanceLeases` in one process exclude
each other; two holds through one `InstanceLeases` exclude each other by its own set of
held ids (an advisory lock, too, may be taken twice by one session). One file for every
instance: a file per instance cost a file creation per new instance (a tenth of a drive's
time) and left a file behind for every instance ever.

`held_elsewhere` looks at a lease without taking it (adapters/serving.py asks it).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from adapters.eventstore import StoreURL

if TYPE_CHECKING:
    import psycopg


class InstanceLeases:
    def __init__(self, store: StoreURL) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._pg: psycopg.Connection[Any] | None = None
        self._file: int | None = None
        self._held: set[uuid.UUID] = set()

    @contextmanager
    def hold(self, instance_id: uuid.UUID) -> Iterator[bool]:
        """Yield True while this holder has the instance's lease, False if another holder
        (another process, or another hold through this object) has it."""
        with self._lock:
            ours = instance_id not in self._held
            self._held.add(instance_id)
        if not ours:
            yield False
            return
        try:
            lease = self._pg_lease if self.store.backend == "postgres" else self._file_lease
            with lease(instance_id) as held:
                yield held
        finally:
            with self._lock:
                self._held.discard(instance_id)

    def held_elsewhere(self, key: uuid.UUID) -> bool:
        """Whether another holder (not this object) has the lease now. Looked at, not
        taken: taking it to see would make it look free to the holder, and held to
        another looking at the same moment."""
        if self.store.backend == "postgres":
            high, low = advisory_halves(key)
            with self._lock:
                row = self._connection().execute(_PG_HELD, (high, low)).fetchone()
            return bool(row and row[0])
        answer = fcntl.fcntl(self._lease_file(), fcntl.F_OFD_GETLK,
                             _flock(fcntl.F_WRLCK, _file_offset(key)))
        kind: int = struct.unpack(_FLOCK, answer)[0]
        return kind != fcntl.F_UNLCK

    @contextmanager
    def _pg_lease(self, instance_id: uuid.UUID) -> Iterator[bool]:
        key = _pg_key(instance_id)
        with self._lock:
            conn = self._connection()
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        held = bool(row and row[0])
        try:
            yield held
        finally:
            if held:
                # A session the server has dropped took its locks with it; the next use
                # of the connection makes a new one.
                with self._lock, suppress(_psycopg().Error):
                    if not conn.closed and not conn.broken:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _connection(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed or self._pg.broken:
            # Bounded: a lost server must not stall serve's loop for TCP's 15 minutes.
            self._pg = _psycopg().connect(
                self.store.psycopg_conninfo(), autocommit=True, connect_timeout=10,
                keepalives=1, keepalives_idle=30, keepalives_interval=10,
                keepalives_count=3)
        return self._pg

    def lost_session(self) -> bool:
        """Whether the PostgreSQL session (and every advisory lock it held) is gone: asked
        of the server, since an idle connection doesn't know (the next use reconnects)."""
        with self._lock:
            if self._pg is None:
                return False
            try:
                self._pg.execute("SELECT 1")
            except _psycopg().Error:
                return True
            return False

    @contextmanager
    def _file_lease(self, instance_id: uuid.UUID) -> Iterator[bool]:
        offset = _file_offset(instance_id)
        fd = self._lease_file()
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK, offset))
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: held elsewhere
            yield False
            return
        try:
            yield True
        finally:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK, offset))

    def _lease_file(self) -> int:
        with self._lock:
            if self._file is None:
                assert self.store.sqlite_path is not None
                # Not `.leases`: that was the directory of one file per instance before.
                database = self.store.sqlite_path.resolve()  # one file however spelt
                path = database.parent / f".{database.name}.lease-locks"
                self._file = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            return self._file

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        if self._file is not None:
            os.close(self._file)  # and with it any lease still held
            self._file = None


_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64 and arm64: 32 bytes
# An advisory lock on a bigint key shows in pg_locks as two 32-bit halves.
_PG_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1)")


# Every advisory lock on a bigint key granted in this database, as pg_locks shows them.
GRANTED_ADVISORY_LOCKS = (
    "SELECT classid::bigint AS classid, objid::bigint AS objid FROM pg_locks"
    " WHERE locktype = 'advisory' AND granted AND objsubid = 1"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def advisory_halves(lease: uuid.UUID) -> tuple[int, int]:
    """The lease's advisory lock key as pg_locks shows it: (classid, objid)."""
    high, low = divmod(_pg_key(lease) & ((1 << 64) - 1), 1 << 32)
    return high, low


def _pg_key(lease: uuid.UUID) -> int:
    return (lease.int >> 64) - (1 << 63)  # a signed 64-bit advisory lock key


def _file_offset(lease: uuid.UUID) -> int:
    return lease.int >> 66  # 62 bits: a byte offset a lock may name


def _flock(kind: int, offset: int) -> bytes:
    """A `struct flock` for one byte at `offset` (l_pid 0, as OFD locks require)."""
    return struct.pack(_FLOCK, kind, os.SEEK_SET, offset, 1, 0)


def _psycopg() -> Any:
    """psycopg, imported on first use: a SQLite store never pays for it."""
    import psycopg

    return psycopg
