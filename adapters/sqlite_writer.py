"""Writers to one SQLite store take turns on a lock, in this process and across processes.

SQLite lets one connection write at a time, and a connection that finds the write lock
taken sleeps in steps of up to 100 ms (its busy handler) before it looks again. Writers
here wait on a lock instead: threads of one process on an RLock, which hands on at once;
processes (several `serve --host`, a CLI command beside `serve`) on an flock of a file
beside the database, looked at again within 2 ms. Either gives up after 30 s, as SQLite's
busy timeout would, with the error SQLite gives ("database is locked").
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

from eventsourcing.persistence import OperationalError

WAIT_SECONDS = 30.0  # as long as SQLite's own busy timeout here (SQLITE_LOCK_TIMEOUT)
# A writer that finds another process writing looks again after this, doubling up to
# the most. (A blocking flock would start it the moment the other is done, but could not
# give up, nor be interrupted: a writer stuck in another process would hang serve.)
RETRY_FIRST, RETRY_MOST = 0.0001, 0.002


class WriterLock:
    """Re-entrant in its process; the file lock is taken by the outermost holder only."""

    def __init__(self, database: Path, wait: float = WAIT_SECONDS) -> None:
        self._path = database.parent / f".{database.name}.writer"
        self._wait = wait
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        deadline = time.monotonic() + self._wait  # one wait for both locks
        if not self._threads.acquire(timeout=self._wait):
            raise OperationalError(f"database is locked: no turn to write in {self._wait} s")
        try:
            if self._depth == 0:
                self._lock_file(deadline)
            self._depth += 1
        except BaseException:
            self._threads.release()
            raise
        return self

    def _lock_file(self, deadline: float) -> None:
        fd, pause = self._file(), RETRY_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationalError(
                        f"database is locked: no turn to write in {self._wait} s, another "
                        "process is writing") from None
            time.sleep(pause)
            pause = min(pause * 2, RETRY_MOST)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _file(self) -> int:
        # Opened once per process (the lock goes with the open file, and dies with it).
        if self._fd is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        return self._fd


_WRITERS: dict[str, WriterLock] = {}
_WRITERS_GUARD = threading.Lock()


def local_writer(backend: str, database: Path | None) -> AbstractContextManager[Any]:
    """Held around every write transaction on a SQLite store; nothing on PostgreSQL."""
    if backend != "sqlite" or database is None:
        return nullcontext()
    path = database.resolve()  # one lock however the path is spelt
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(str(path), WriterLock(path))
