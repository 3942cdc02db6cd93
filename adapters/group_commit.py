"""Group commit: saves from concurrent threads share one transaction.

`serve` drives many instances at once, each step ending in a save. One transaction per
save queues every step behind the store's single writer (SQLite's write lock,
eventsourcing's table lock on PostgreSQL) and pays a commit each. Here the saves that
arrive while a commit is in progress wait, and the next leader writes them all in one
transaction. Under no load a save is written at once, alone, as before.

A batch is all or nothing, so a conflict in one save (another writer took an aggregate's
version) would fail the others. The batch is then written again one save at a time: each
save succeeds or fails exactly as it would have alone. Any other error (the database went
away) is every save's error, as it would have been.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

# Writes the events in one transaction, or raises; with them, what each save derives from
# them (adapters/work_table.py), in the same transaction.
Write = Callable[[list[Any], list[Any]], None]


class WriteInterrupted(Exception):
    """The leader writing this save was interrupted (a BaseException such as
    KeyboardInterrupt): whether the save was committed is not known."""


def _copy_of(error: Exception) -> Exception:
    """The same error, with its cause, as a new object."""
    try:
        copied = copy.copy(error)
    except Exception:  # an exception type that can't be copied: share it
        return error
    copied.__cause__, copied.__context__ = error.__cause__, error.__context__
    return copied


class _Wake:
    """A one-waiter signal: a bare lock, cheaper than `threading.Event`'s condition,
    which showed in profiles of `serve` (a save sets one for every waiter it wrote)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self) -> None:
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()


class _Pending:
    """One caller's save, waiting for its batch to be written."""

    def __init__(self, events: list[Any], derived: list[Any]) -> None:
        self.events = events
        self.derived = derived
        self.aggregates = frozenset(event.originator_id for event in events)
        self.wake = _Wake()
        self.written = False  # its outcome is known: committed, or `error`
        self.error: Exception | None = None


class GroupCommit:
    def __init__(self, write: Write, conflict: type[Exception], max_batch: int = 256) -> None:
        self._write = write
        self._conflict = conflict
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leader: _Pending | None = None  # whose thread writes batches now
        self.transactions = 0  # how many were written, and for how many saves
        self.saves = 0
        self.split = 0  # batches written again one save at a time after a conflict

    def save(self, events: list[Any], derived: list[Any] | None = None) -> None:
        """Return once `events` are committed; raise what writing them alone would raise.
        `derived` is written with them (the write's second argument)."""
        pending = _Pending(events, derived or [])
        with self._lock:
            self._queue.append(pending)
            if self._leader is None:
                self._leader = pending
            waits = self._leader is not pending  # decided here: a hand-off wakes it
        try:
            if waits:
                pending.wake.wait()  # written by a leader, or handed the lead
            while not pending.written:  # we lead: write batches until ours is written
                self._write_next_batch()
            self._pass_lead(pending)
        except BaseException:  # interrupted (Ctrl-C in a main thread): leave nothing stuck
            self._abandon(pending)
            raise
        if pending.error is not None:
            raise pending.error

    def _pass_lead(self, pending: _Pending) -> None:
        """If `pending` leads, the lead goes to the oldest waiting save, or to whoever
        saves next; its thread is woken."""
        with self._lock:
            if self._leader is not pending:
                return
            self._leader = self._queue[0] if self._queue else None
            if self._leader is not None:
                self._leader.wake.set()

    def _abandon(self, pending: _Pending) -> None:
        """A save whose caller stopped waiting: out of the queue unless a leader has
        taken it already (then it is written, and nobody waits for it); a lead it held
        or was handed goes on to the next."""
        with self._lock:
            if pending in self._queue:
                self._queue.remove(pending)
        self._pass_lead(pending)

    def _take_batch(self) -> list[_Pending]:
        """The queued saves, oldest first, but at most one per aggregate: two saves of
        one aggregate (two claims on one host) conflict, and would fail the whole batch.
        The later one waits for the next batch, where it succeeds or fails alone."""
        batch: list[_Pending] = []
        taken: set[Any] = set()
        for pending in self._queue:
            if len(batch) == self._max_batch:
                break
            if taken.isdisjoint(pending.aggregates):
                batch.append(pending)
                taken |= pending.aggregates
        chosen = set(map(id, batch))
        self._queue = [pending for pending in self._queue if id(pending) not in chosen]
        return batch

    def _write_next_batch(self) -> None:
        batch: list[_Pending] = []
        outcomes: dict[int, Exception | None] = {}  # id(pending) -> its error, or None
        try:
            with self._lock:
                batch = self._take_batch()
            try:
                self._write([event for pending in batch for event in pending.events],
                            [item for pending in batch for item in pending.derived])
                self._count(len(batch))
                outcomes = dict.fromkeys(map(id, batch))
            except self._conflict:
                self.split += 1
                for pending in batch:  # one at a time: only a conflicting save fails
                    outcomes[id(pending)] = self._write_alone(pending)
            except Exception as error:
                # Every save's error, each its own copy: one exception object raised in
                # several threads would gather all their tracebacks.
                outcomes = {id(pending): _copy_of(error) for pending in batch}
        finally:
            for pending in batch:  # a BaseException (interrupt) left some outcomes unknown
                pending.error = outcomes.get(id(pending), WriteInterrupted(
                    "the write of this save was interrupted: it may not be recorded"))
                pending.written = True
                pending.wake.set()

    def _write_alone(self, pending: _Pending) -> Exception | None:
        try:
            self._write(pending.events, pending.derived)
        except Exception as error:
            return error
        self._count(1)
        return None

    def _count(self, saves: int) -> None:
        self.transactions += 1
        self.saves += saves
