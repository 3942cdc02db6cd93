"""Writers to one SQLite store take turns on a lock, in this process and across processes.

SQLite lets one connection write at a time, and a connection that finds the write lock
taken sleeps in steps of up to 100 ms (its busy handler) before it looks again. Writers
here wait on a lock instead and start the moment the previous one is done: threads of one
process on an RLock, processes (several `serve --host`, a CLI command beside `serve`) on
an flock of a file beside the database, which the kernel hands on at once.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any


class WriterLock:
    """Re-entrant in its process; the file lock is taken by the outermost holder only."""

    def __init__(self, database: Path) -> None:
        self._path = database.parent / f".{database.name}.writer"
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self._threads.acquire()
        try:
            if self._depth == 0:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            self._depth += 1
        except BaseException:
            self._threads.release()
            raise
        return self

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
    path = database.absolute()
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(str(path), WriterLock(path))
