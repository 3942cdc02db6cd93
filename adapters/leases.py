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

A serve's instance leases and its serving leases (adapters/serving.py) share one
`InstanceLeases`, so one PostgreSQL session: a lease lives as long as its session, so
that connection is never a pooled one. `lost_since` tells its users when the session
was made again (the leases taken in the old one went with it).
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
        self._sessions = 0  # PostgreSQL connections made: each a session of its own

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

    def held_elsewhere(self, *keys: uuid.UUID) -> bool:
        """Whether another holder (not this object) has one of these leases now, in one
        look (a query on PostgreSQL). Looked at, not taken: taking it to see would make
        it look free to the holder, and held to another looking at the same moment."""
        if self.store.backend == "postgres":
            halves = [advisory_halves(key) for key in keys]
            with self._lock:
                row = self._connection().execute(_PG_HELD, (
                    [high for high, _ in halves], [low for _, low in halves])).fetchone()
            return bool(row and row[0])
        return any(self._file_held(key) for key in keys)

    def _file_held(self, key: uuid.UUID) -> bool:
        """An open file description's own locks never conflict with it: not reported."""
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
                self.store.psycopg_conninfo("leases"), autocommit=True, connect_timeout=10,
                keepalives=1, keepalives_idle=30, keepalives_interval=10,
                keepalives_count=3)
            self._sessions += 1
        return self._pg

    def session(self) -> int:
        """The session leases are taken in now (connected if need be), for `lost_since`;
        0 for a lease file, which no restart loses."""
        if self.store.backend != "postgres":
            return 0
        with self._lock:
            self._connection()
            return self._sessions

    def lost_since(self, session: int) -> bool:
        """Whether that session, and every lease taken in it, is gone: another was made
        since (a use found it dropped), or the server says so now (an idle connection
        doesn't know it was dropped; the next use makes a new one)."""
        if self.store.backend != "postgres":
            return False
        with self._lock:
            if self._sessions != session or self._pg is None:
                return True
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
# An advisory lock on a bigint key shows in pg_locks as two 32-bit halves; one held by
# the asking session is not held elsewhere.
_PG_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN unnest(%s::bigint[], %s::bigint[])"
    " AS k(high, low) ON l.classid = k.high::oid AND l.objid = k.low::oid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.pid <> pg_backend_pid()"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))")


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
