"""How a drive commits its steps' events (both stores): quick steps together, a step that
takes time only after what came before it is committed; every step's event either way."""

from __future__ import annotations

from typing import Any

import pytest

from application import step_recording
from tests.conftest import Harness

SHELVE_EVENTS = ["ShelveRequested", "PoweredOff", "Snapshotted", "Shelved",
                 "ShelveOffloadRequested", "PoweredOff", "NetworkCleaned", "Destroyed",
                 "ClaimReleased", "ShelveOffloaded"]
WAIT = ("--wait", "--timeout", "60")


def booted(harness_factory: Any, failpoints: str = "") -> Harness:
    """vm1 active on h1, with `serve`'s worker running in this process."""
    h: Harness = harness_factory(failpoints=failpoints)
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "512",
         "--disk-gb", "1", *WAIT)
    return h


class CountedInt(int):
    """How many transactions, and which events each wrote: shown should a count differ."""

    batches: list[list[str]]

    def __repr__(self) -> str:
        return f"{int(self)} {self.batches}"


def shelve(h: Harness) -> tuple[CountedInt, list[str]]:
    """The worker's transactions for one shelve of vm1 (offload at once), and the shelve's
    events as `history` lists them."""
    assert h.worker_ctx is not None
    commits = h.worker_ctx.repo.commits
    batches: list[list[str]] = []
    write = commits._write

    def write_and_note(stored: list[Any], derived: list[Any]) -> None:
        write(stored, derived)
        batches.append([event.topic.rsplit(".", 1)[-1] for event in stored])

    commits._write = write_and_note
    before = commits.transactions
    try:
        h.shelf("shelve", "vm1", *WAIT)
        h.wait_until_idle()
    finally:
        commits._write = write
    written = CountedInt(commits.transactions - before)
    written.batches = batches
    history = h.ok("history", "vm1", "--json").json()
    request_id = history[-1]["request_id"]
    return written, [row["event"] for row in history if row["request_id"] == request_id]


def test_quick_steps_are_committed_together(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every step counts as quick once timed, however busy the machine running the test.
    monkeypatch.setattr(step_recording, "QUICK_STEP_SECONDS", 60.0)
    monkeypatch.setattr(step_recording, "RECORD_WITHIN_SECONDS", 60.0)
    h = booted(harness_factory)
    first, events = shelve(h)
    assert events == SHELVE_EVENTS
    # The worker's first shelve: a step never timed on its host counts as slow, so what
    # came before it is committed first; steps that only record are quick: power-off |
    # snapshot, shelved, power-off (timed just now) | network | destroy, release |
    # offloaded.
    assert first == 5
    h.ok("unshelve", "vm1", *WAIT)
    second, events = shelve(h)
    assert events == SHELVE_EVENTS
    # Every step timed: up to the claim's release (saved with the host), then the rest.
    assert second == 2


def test_each_step_is_committed_before_the_next_when_steps_take_time(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a real host, where a power-off or a snapshot takes seconds.
    monkeypatch.setattr(step_recording, "QUICK_STEP_SECONDS", 0.0)
    h = booted(harness_factory)
    for _ in range(2):
        written, events = shelve(h)
        assert events == SHELVE_EVENTS
        # What came before each host step is committed when it starts, so `show`
        # follows them; a step that only records goes with the step before it:
        # power-off | snapshot, shelved | power-off | network | destroy, release |
        # offloaded.
        assert written == 6
        h.ok("unshelve", "vm1", *WAIT)


@pytest.mark.parametrize(("failpoint", "done_before"), [
    ("before:Snapshot=error", ["ShelveRequested", "PoweredOff"]),
    ("before:Destroy=error", SHELVE_EVENTS[:SHELVE_EVENTS.index("Destroyed")]),
], ids=["snapshot", "destroy"])
def test_a_failing_step_keeps_the_quick_steps_before_it(
    harness_factory: Any, monkeypatch: pytest.MonkeyPatch, failpoint: str,
    done_before: list[str],
) -> None:
    monkeypatch.setattr(step_recording, "QUICK_STEP_SECONDS", 60.0)
    h = booted(harness_factory, failpoint)
    assert h.worker is not None
    for host, step in (("h1", "PowerOff"), ("h1", "Snapshot"), ("h1", "CleanNetwork"),
                       ("h1", "Destroy")):
        # As if timed by earlier shelves: the events before the failing step wait for it.
        h.worker.records.note_step_seconds(host, step, 0.001)
    _, events = shelve(h)
    assert events[:len(done_before) + 1] == [*done_before, "StepFailed"]
    assert h.show("vm1")["fault"]["step"] == failpoint.split(":")[1].split("=")[0]
