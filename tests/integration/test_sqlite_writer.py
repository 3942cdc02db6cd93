"""SQLite writers take turns on one lock: threads of a process and separate processes
(adapters/sqlite_writer.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from eventsourcing.persistence import OperationalError

from adapters.sqlite_writer import WriterLock, local_writer

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys, time
from pathlib import Path
from adapters.sqlite_writer import WriterLock
print("waiting", flush=True)
with WriterLock(Path(sys.argv[1])):
    print(time.monotonic(), flush=True)
"""


def test_another_process_waits_for_the_writer(tmp_path: Path) -> None:
    database = tmp_path / "shelf.db"
    with WriterLock(database):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(database)], cwd=ROOT,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(0.3)  # the child is now blocked on the lock, if it works
        released = time.monotonic()
    acquired = float(child.stdout.readline())
    assert child.wait(timeout=30) == 0
    assert acquired >= released  # CLOCK_MONOTONIC is one clock for every process


def test_threads_take_turns_and_a_holder_may_enter_again(tmp_path: Path) -> None:
    lock = local_writer("sqlite", tmp_path / "shelf.db")
    assert lock is local_writer("sqlite", tmp_path / "shelf.db")  # one per database
    inside: list[str] = []

    def write(name: str) -> None:
        with lock, lock:  # re-entered: a snapshot written inside a save's turn
            inside.append(f"{name} in")
            time.sleep(0.05)
            inside.append(f"{name} out")

    threads = [threading.Thread(target=write, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert inside in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_a_writer_gives_up_when_another_holds_the_lock_too_long(tmp_path: Path) -> None:
    database = tmp_path / "shelf.db"
    # Two locks on one file stand for two processes: each has its own open file.
    with (WriterLock(database), pytest.raises(OperationalError, match="database is locked"),
          WriterLock(database, wait=0.2)):
        pass
    with WriterLock(database, wait=0.2):  # free again, taken at once
        pass
