"""How a drive commits its steps' events (both stores): quick steps together, a step on a
host whose steps take time before the next one there starts; every step's event either
way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.failpoints import EnvFailpoints
from cli.bootstrap import Context
from cli.worker import Worker
from domain.process_manager import Settings
from domain.service import new_request_id
from projections.queries import history
from tests.conftest import node_xml

SHELVE_EVENTS = ["ShelveRequested", "PoweredOff", "Snapshotted", "Shelved",
                 "ShelveOffloadRequested", "PoweredOff", "NetworkCleaned", "Destroyed",
                 "ClaimReleased", "ShelveOffloaded"]


class Shelving:
    """vm1 booted on h1 by a worker of this process; then shelved (offload at once)."""

    def __init__(self, store_url: str, tmp_path: Path, failpoints: str = "") -> None:
        self.ctx = Context(store_url, "shelf", tmp_path / "data")
        self.failpoints = failpoints
        self.slow_hosts: list[str] = []  # hosts whose steps took seconds, said to the worker
        uri = f"test://{node_xml(tmp_path / 'h1.xml')}"
        self.ctx.service.add_host("h1", uri, 8, 8192, 100, "tester", new_request_id())
        self.instance_id = str(self.ctx.service.boot(
            name="vm1", host="h1", vcpus=1, memory_mb=512, disk_gb=1, image_id=None,
            volume_backed=False, user="tester", request_id=new_request_id()).id)
        self.run_worker()

    def run_worker(self) -> None:
        """A worker until idle (it stops its pool then), on this context's connections."""
        worker = Worker(self.ctx, Settings(shutdown_timeout=1),
                        EnvFailpoints(self.failpoints), threads=1)
        for host in self.slow_hosts:
            worker.pm.note_step_seconds(host, 2.0)
        worker.run(threading.Event(), once=True)

    def shelve(self) -> tuple[int, list[str]]:
        """The transactions the worker wrote for the shelve, and its events as `history`
        lists them."""
        request_id = new_request_id()
        self.ctx.service.request("shelve", self.instance_id, "tester", request_id)
        before = self.ctx.repo.commits.transactions
        self.run_worker()
        written = self.ctx.repo.commits.transactions - before
        self.ctx.projector.catch_up()
        return written, [row["event"] for row in history(self.ctx.db, self.instance_id)
                         if row["request_id"] == request_id]

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def shelving(request: pytest.FixtureRequest, store_url: str, tmp_path: Path
             ) -> Iterator[Shelving]:
    lab = Shelving(store_url, tmp_path, getattr(request, "param", ""))
    yield lab
    lab.close()


def test_quick_steps_are_committed_together(shelving: Shelving) -> None:
    written, events = shelving.shelve()
    assert events == SHELVE_EVENTS
    # Up to the claim's release (saved with the host), then the closing event.
    assert written == 2


def test_each_step_on_a_slow_host_is_committed_before_the_next(shelving: Shelving) -> None:
    # As a real host's power-off or snapshot: seconds, where the test driver takes
    # microseconds.
    shelving.slow_hosts.append("h1")
    written, events = shelving.shelve()
    assert events == SHELVE_EVENTS
    # Each step on the host is committed before the next one there starts, so `show`
    # follows them; a step that only records (shelved with the offload request, the
    # release, offloaded) goes with the host step before it: power-off | snapshot,
    # shelved | power-off | network | destroy, release | offloaded.
    assert written == 6


@pytest.mark.parametrize(("shelving", "done_before"), [
    ("before:Snapshot=error", ["ShelveRequested", "PoweredOff"]),
    ("before:Destroy=error", SHELVE_EVENTS[:SHELVE_EVENTS.index("Destroyed")]),
], indirect=["shelving"], ids=["snapshot", "destroy"])
def test_a_failing_step_keeps_the_quick_steps_before_it(
    shelving: Shelving, done_before: list[str]
) -> None:
    _, events = shelving.shelve()
    assert events[:len(done_before) + 1] == [*done_before, "StepFailed"]
