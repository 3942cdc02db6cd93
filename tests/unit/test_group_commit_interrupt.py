"""Group commit when the thread writing a batch is interrupted (a BaseException such as
KeyboardInterrupt). Such an interrupt can't be produced reliably inside a real database
call, so here the write function is a stand-in that raises it: the only fake in this
file, and what it fakes is only that failure."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

from adapters.group_commit import GroupCommit, WriteInterrupted


class Interrupt(BaseException):
    pass


class InterruptedOnce:
    """Records written events, in order. The first write waits for `release`; the write
    numbered `interrupted` is interrupted instead of written."""

    def __init__(self, interrupted: int = 1) -> None:
        self.release = threading.Event()
        self.interrupted = interrupted
        self.written: list[Any] = []
        self.calls = 0

    def __call__(self, events: list[Any], derived: list[Any]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(10)
        if self.calls == self.interrupted:
            raise Interrupt
        self.written += events


def event(name: str) -> Any:
    return SimpleNamespace(originator_id=name)


def save_in_thread(commits: GroupCommit, name: str, outcomes: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            commits.save([event(name)])
            outcomes[name] = "saved"
        except BaseException as error:  # recorded for the assertions
            outcomes[name] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_an_interrupted_leader_hands_the_lead_on_and_nothing_waits_for_ever() -> None:
    write = InterruptedOnce()
    commits = GroupCommit(write, conflict=ValueError)
    outcomes: dict[str, Any] = {}
    leader = save_in_thread(commits, "a", outcomes)
    time.sleep(0.2)  # a leads, its write blocks; b and c queue behind it
    followers = [save_in_thread(commits, name, outcomes) for name in ("b", "c")]
    time.sleep(0.2)
    write.release.set()
    for thread in (leader, *followers):
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert isinstance(outcomes["a"], Interrupt)
    assert outcomes["b"] == outcomes["c"] == "saved"
    assert [e.originator_id for e in write.written] == ["b", "c"]
    commits.save([event("d")])  # and the next save is written, not stuck
    assert write.written[-1].originator_id == "d"


def test_saves_in_an_interrupted_batch_learn_their_outcome_is_unknown() -> None:
    write = InterruptedOnce(interrupted=2)
    commits = GroupCommit(write, conflict=ValueError)
    outcomes: dict[str, Any] = {}
    first = save_in_thread(commits, "x", outcomes)
    time.sleep(0.2)  # x leads and its write blocks; a, b and c queue into the next batch
    queued = []
    for name in ("a", "b", "c"):
        queued.append(save_in_thread(commits, name, outcomes))
        time.sleep(0.05)
    write.release.set()
    for thread in (first, *queued):
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert outcomes["x"] == "saved"
    assert isinstance(outcomes["a"], Interrupt)  # the oldest led the second batch
    assert isinstance(outcomes["b"], WriteInterrupted)
    assert isinstance(outcomes["c"], WriteInterrupted)
    commits.save([event("d")])
    assert [e.originator_id for e in write.written] == ["x", "d"]


def test_a_batch_error_is_not_shared_between_threads() -> None:
    release = threading.Event()
    calls: list[int] = []

    def fails(events: list[Any], derived: list[Any]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            release.wait(10)
        raise RuntimeError("database went away")

    commits = GroupCommit(fails, conflict=ValueError)
    errors: dict[str, Any] = {}
    first = save_in_thread(commits, "x", errors)
    time.sleep(0.2)  # x's write blocks; a and b queue into one batch
    queued = [save_in_thread(commits, name, errors) for name in ("a", "b")]
    time.sleep(0.2)
    release.set()
    for thread in (first, *queued):
        thread.join(timeout=10)
    assert calls == [1, 2]  # x alone, then a and b together
    assert isinstance(errors["a"], RuntimeError) and isinstance(errors["b"], RuntimeError)
    assert errors["a"] is not errors["b"]


def test_a_waiter_interrupted_in_the_main_thread_leaves_the_queue() -> None:
    write = InterruptedOnce(interrupted=0)  # never interrupted: only the waiter is
    commits = GroupCommit(write, conflict=ValueError)
    outcomes: dict[str, Any] = {}
    first = save_in_thread(commits, "x", outcomes)
    time.sleep(0.2)  # x's write blocks; this (main) thread's save waits behind it
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C
    try:
        commits.save([event("a")])
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    write.release.set()
    first.join(timeout=10)
    assert interrupted and outcomes["x"] == "saved"
    commits.save([event("d")])  # not stuck behind the abandoned save
    assert [e.originator_id for e in write.written] == ["x", "d"]


class InterruptedBeforeTakingItsBatch(GroupCommit):
    """The first leader is interrupted before it takes its first batch (say, while it
    waits for the queue's lock), with its own save still queued."""

    def __init__(self, write: Any, queued: threading.Event) -> None:
        super().__init__(write, conflict=ValueError)
        self.queued = queued
        self.interrupted = False

    def _write_next_batch(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            self.queued.wait(10)
            raise Interrupt
        super()._write_next_batch()


def test_a_leader_interrupted_before_its_first_batch_passes_the_lead_to_another() -> None:
    written: list[Any] = []
    queued = threading.Event()
    commits = InterruptedBeforeTakingItsBatch(lambda events, _: written.extend(events), queued)
    outcomes: dict[str, Any] = {}
    leader = save_in_thread(commits, "a", outcomes)
    time.sleep(0.2)
    follower = save_in_thread(commits, "b", outcomes)
    time.sleep(0.2)
    queued.set()
    for thread in (leader, follower):
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert isinstance(outcomes["a"], Interrupt) and outcomes["b"] == "saved"
    assert [e.originator_id for e in written] == ["b"]  # a's save was never written
    commits.save([event("c")])
    assert [e.originator_id for e in written] == ["b", "c"]
