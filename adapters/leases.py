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

`ServingLeases`: a `serve --host` holds one lease per host it owns for as long as it runs,
so that placement can tell a host some serve performs steps on from one nobody does.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
        """Whether another holder has the lease now (taken and let go again if not)."""
        with self.hold(key) as held:
            return not held

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
        offset = instance_id.int >> 66  # 62 bits: a byte offset a lock may name
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
                name = f".{self.store.sqlite_path.name}.lease-locks"
                path = self.store.sqlite_path.parent / name
                self._file = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            return self._file

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        if self._file is not None:
            os.close(self._file)  # and with it any lease still held
            self._file = None


def serving_key(host: str) -> uuid.UUID:
    """The lease a serve holds while it performs the steps on `host`."""
    return uuid.uuid5(_SERVING, host)


_SERVING = uuid.UUID("5e1f5e4e-0000-4000-8000-000000000001")


class ServingLeases:
    """The leases of the hosts a `serve --host` owns, held until `close`. Each has an
    `InstanceLeases` of its own (a PostgreSQL session, an open lease file), so that another
    in this process asking `held_elsewhere` sees them held."""

    def __init__(self, store: StoreURL, hosts: frozenset[str]) -> None:
        self._leases = InstanceLeases(store)
        self._hosts = hosts
        self._holding: dict[str, ExitStack] = {}

    def refresh(self) -> list[str]:
        """Take every owned host's lease not held yet (at start, and again after the
        database connection was lost with them); return the hosts another serve holds."""
        if self._leases.lost_session():  # they ended with it
            self.release_all()
        elsewhere = []
        for host in sorted(self._hosts - set(self._holding)):
            stack = ExitStack()
            if stack.enter_context(self._leases.hold(serving_key(host))):
                self._holding[host] = stack
            else:
                stack.close()
                elsewhere.append(host)
        return elsewhere

    def release_all(self) -> None:
        for stack in self._holding.values():
            stack.close()
        self._holding.clear()

    def close(self) -> None:
        self.release_all()
        self._leases.close()


def _flock(kind: int, offset: int) -> bytes:
    """A `struct flock` for one byte at `offset` (l_pid 0, as OFD locks require)."""
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, 1, 0)


def _psycopg() -> Any:
    """psycopg, imported on first use: a SQLite store never pays for it."""
    import psycopg

    return psycopg
