"""The crash matrix: the worker dies before or after every step of shelve, offload and
unshelve; a new worker finishes the operation. Every step's event appears once, nothing
leaks (reconcile is clean), and exactly the images the final state needs exist.

libvirt's test driver keeps its state only inside the connection that made it, so the
hypervisor side (the connections) stays in this process while the worker is "killed":
the `crash` failpoint raises WorkerKilled, a BaseException nothing in shelf catches,
which abandons the step exactly where a kill -9 would. The new worker is a new Worker
with a new Context (store connections, caches) sharing only the host connections.
A real `kill -9`-style exit of `shelf serve` against qemu:///system is in tests/e2e.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest

from adapters.failpoints import EnvFailpoints
from adapters.libvirt_host import LibvirtHosts
from application.bootstrap import Context
from application.worker import Worker
from domain.instance import Instance
from domain.process_manager import Settings
from domain.reconcile import reconcile
from domain.service import all_hosts, find
from tests.conftest import Harness

SHELVE_EVENTS = ["ShelveRequested", "PoweredOff", "Snapshotted", "Shelved",
                 "ShelveOffloadRequested", "PoweredOff", "NetworkCleaned", "Destroyed",
                 "ClaimReleased", "ShelveOffloaded"]
OFFLOAD_EVENTS = ["ShelveOffloadRequested", "PoweredOff", "NetworkCleaned", "Destroyed",
                  "ClaimReleased", "ShelveOffloaded"]
UNSHELVE_OFFLOADED_EVENTS = ["UnshelveRequested", "ResourcesClaimed", "NetworkSetUp",
                             "Spawned", "ImageDeleted", "Unshelved"]
UNSHELVE_SHELVED_EVENTS = ["UnshelveRequested", "PoweredOn", "ImageDeleted", "Unshelved"]

# operation: (state to start from, request argv, steps to fail at, events, final vm_state,
#             images left, offload time of the worker)
OPERATIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], list[str], str, int, int]] = {
    "shelve": ("active", ("shelve",), ("PowerOff", "Snapshot", "CleanNetwork", "Destroy",
                                       "ReleaseClaim"), SHELVE_EVENTS, "shelved_offloaded", 1, 0),
    "shelve-offload": ("shelved", ("shelve-offload",), ("PowerOff", "CleanNetwork", "Destroy",
                                                        "ReleaseClaim"), OFFLOAD_EVENTS,
                       "shelved_offloaded", 1, -1),
    "unshelve-offloaded": ("shelved_offloaded", ("unshelve",), ("Claim", "SetupNetwork", "Spawn",
                                                                "DeleteImage"),
                           UNSHELVE_OFFLOADED_EVENTS, "active", 0, 0),
    "unshelve-shelved": ("shelved", ("unshelve",), ("PowerOn", "DeleteImage"),
                         UNSHELVE_SHELVED_EVENTS, "active", 0, -1),
}
CASES = [
    pytest.param(operation, f"{when}:{step}", id=f"{operation}-{when}:{step}")
    for operation, spec in OPERATIONS.items() for step in spec[2] for when in ("before", "after")
]


class WorkerKilled(BaseException):
    """The in-process stand-in for kill -9: nothing in shelf catches a BaseException."""


class CrashLab:
    def __init__(self, store: str, tmp: Path, hosts: LibvirtHosts) -> None:
        self.store, self.tmp, self.hosts = store, tmp, hosts
        self.cli = Harness(store, tmp)

    def run_worker(self, offload: int, failpoint: str = "") -> bool:
        """Run a fresh worker until idle (or killed); True if it was killed."""
        stop, killed = threading.Event(), threading.Event()

        def crash() -> NoReturn:
            killed.set()
            stop.set()
            raise WorkerKilled

        ctx = Context(self.store, self.tmp / "data", hosts=self.hosts)
        settings = Settings(shelved_offload_time=offload, shutdown_timeout=1)
        worker = Worker(ctx, settings, EnvFailpoints(failpoint, crash=crash), threads=1)
        try:
            worker.run(stop, once=True)
        finally:
            ctx.app.close()
            ctx.db.close()
        return killed.is_set()

    def bring_to(self, state: str) -> str:
        self.cli.add_host("h1")
        self.cli.add_host("h2")
        instance_id = self.cli.ok("boot", "vm1", "--host", "h1", "--vcpus", "1",
                                  "--memory-mb", "512", "--disk-gb", "2").out.strip()
        self.run_worker(offload=-1)
        if state in ("shelved", "shelved_offloaded"):
            self.cli.ok("shelve", "vm1")
            self.run_worker(offload=-1 if state == "shelved" else 0)
        assert self.cli.show("vm1")["vm_state"] == state
        return instance_id

    def events_of_last_request(self, instance_id: str) -> list[str]:
        history = self.cli.ok("history", instance_id, "--json").json()
        request_id = history[-1]["request_id"]
        return [r["event"] for r in history if r["request_id"] == request_id]

    def differences(self) -> list[Any]:
        ctx = Context(self.store, self.tmp / "data", hosts=self.hosts)
        try:
            instances = [i for i in (find(ctx.repo, uuid.UUID(x["id"]), Instance)
                                     for x in self.cli.ok("list", "--json").json()) if i]
            return reconcile(instances, all_hosts(ctx.repo), self.hosts, ctx.images,
                             ctx.images.partials(), store_id=ctx.identify().store_id)
        finally:
            ctx.app.close()
            ctx.db.close()


@pytest.mark.parametrize(("operation", "failpoint"), CASES)
def test_worker_killed_at_step_boundary_resumes(
    operation: str, failpoint: str, store_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELF_DATA_DIR", str(tmp_path / "data"))
    start, request, _, expected, final, images, offload = OPERATIONS[operation]
    lookup = Context(store_url, tmp_path / "data")  # host name -> URI, from the store
    hosts = LibvirtHosts(lookup.host_uri, tmp_path / "data")
    lab = CrashLab(store_url, tmp_path, hosts)
    try:
        instance_id = lab.bring_to(start)
        lab.cli.ok(*request, "vm1")
        assert lab.run_worker(offload, f"{failpoint}=crash"), f"{failpoint} never fired"
        assert lab.cli.show("vm1")["task_state"] is not None  # really half-finished

        assert not lab.run_worker(offload)  # the restarted worker, no failpoints
        vm = lab.cli.show("vm1")
        assert (vm["vm_state"], vm["task_state"], vm["fault"]) == (final, None, None)
        assert lab.events_of_last_request(instance_id) == expected
        assert len(lab.cli.images()) == images
        assert lab.differences() == []
        usage = sum(h["memory_mb_used"] for h in lab.cli.hosts().values())
        assert usage == (512 if final == "active" else 0)
    finally:
        hosts.close()
        lookup.close()
