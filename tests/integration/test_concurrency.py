"""Races and timers, on both stores: concurrent requests through real `shelf` processes,
two unshelves racing for the last room, and the offload timer across a worker restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from adapters.eventstore import EventStoreRepository
from adapters.libvirt_host import LibvirtHosts
from application.bootstrap import Context
from application.placement import HostRanking
from application.step_recording import StepRecorder
from domain.host import Host, host_id_for
from domain.process_manager import ProcessManager, Settings
from domain.service import RecordConflict, new_request_id
from tests.conftest import node_xml

SHELF = str(Path(sys.executable).parent / "shelf")
WAIT = ("--wait", "--timeout", "60")


def boot(h: Any, name: str, host: str = "h1", memory: int = 1024) -> str:
    return str(h.ok("boot", name, "--host", host, "--vcpus", "1", "--memory-mb", str(memory),
                    "--disk-gb", "5", *WAIT).out.strip())


def test_twenty_concurrent_shelves_exactly_one_wins(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    boot(h, "vm1")
    env = {**os.environ, "SHELF_STORE": h.store}
    procs = [subprocess.Popen([SHELF, "shelve", "vm1"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(20)]
    results = [(proc.wait(timeout=120), proc.stderr.read() if proc.stderr else "")
               for proc in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [4] * 19, results
    assert all("Traceback" not in err for _, err in results)
    history = h.ok("history", "vm1", "--json").json()
    assert [r["event"] for r in history].count("ShelveRequested") == 1


def test_two_unshelves_race_for_the_last_room(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1", cpus=2, memory_mb=2048)
    h.add_host("h2", cpus=2, memory_mb=2048)
    boot(h, "a", "h1", memory=2048)
    boot(h, "b", "h2", memory=2048)
    h.ok("shelve", "a", *WAIT)
    h.ok("shelve", "b", *WAIT)
    h.ok("boot", "filler", "--host", "h2", "--vcpus", "1", "--memory-mb", "1024",
         "--disk-gb", "1", *WAIT)  # h2 can no longer take a 2048 MB instance
    h.ok("unshelve", "a")
    h.ok("unshelve", "b")
    deadline = time.monotonic() + 60
    while any(h.show(x)["task_state"] for x in ("a", "b")):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    states = {x: h.show(x) for x in ("a", "b")}
    landed = [x for x, vm in states.items() if vm["vm_state"] == "active"]
    assert len(landed) == 1 and states[landed[0]]["host"] == "h1"
    loser = states["b" if landed == ["a"] else "a"]
    assert loser["vm_state"] == "shelved_offloaded" and "No valid host" in loser["fault"][
        "message"]
    for usage in h.hosts().values():
        assert usage["memory_mb_used"] <= usage["memory_mb"]
        assert usage["vcpus_used"] <= usage["vcpus"]


def test_offload_timer_survives_a_worker_restart(
    harness_factory: Any, tmp_path: Path, store_url: str, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELF_STORE", store_url)
    settings = Settings(shelved_offload_time=3, shutdown_timeout=2)
    lookup = Context(None, tmp_path / "data")  # the store URL from SHELF_STORE
    hosts = LibvirtHosts(lookup.host_uri, tmp_path / "data")
    request.addfinalizer(hosts.close)
    request.addfinalizer(lookup.close)
    first = harness_factory(settings, hosts=hosts)
    first.add_host("h1")
    boot(first, "old")
    boot(first, "new")
    first.ok("shelve", "old", *WAIT)
    assert first.show("old")["vm_state"] == "shelved"
    first.stop_worker()  # the service is down when the deadline passes
    time.sleep(3.5)
    first.ok("shelve", "new")  # recorded while down: shelved only after the restart

    second = harness_factory(settings, hosts=hosts)
    deadline = time.monotonic() + 30
    while second.show("old")["vm_state"] != "shelved_offloaded":
        assert time.monotonic() < deadline, "the overdue instance was never offloaded"
        time.sleep(0.2)
    while second.show("new")["task_state"] is not None:
        time.sleep(0.2)
    assert second.show("new")["vm_state"] == "shelved"  # shelved less than 3 s ago
    old_actions = second.ok("actions", "old", "--json").json()
    assert (old_actions[-1]["action"], old_actions[-1]["user"]) == ("shelveOffload", "shelf")


def test_never_offload_with_minus_one(harness_factory: Any) -> None:
    h = harness_factory(Settings(shelved_offload_time=-1, shutdown_timeout=2))
    h.add_host("h1")
    boot(h, "vm1")
    h.ok("shelve", "vm1", *WAIT)
    time.sleep(1.5)
    assert h.show("vm1")["vm_state"] == "shelved"


class ClaimRacedOnce(EventStoreRepository):
    """The real store, where once armed another writer fills the chosen host just before a
    claim on it is saved: the claim's save then really conflicts (deterministically)."""

    armed = False
    raced = False

    def save(self, *aggregates: Any) -> None:
        host = next((a for a in aggregates if isinstance(a, Host)), None)
        if host is not None and self.armed and not self.raced:
            self.raced = True
            rival = self.get(host.id)
            rival.claim("rival", 1, 7500, 1, "rival", "req-rival")
            super().save(rival)
        super().save(*aggregates)


def test_a_claim_that_lost_a_race_goes_on_from_the_stored_state(
    store_url: str, tmp_path: Path
) -> None:
    ctx = Context(store_url, tmp_path / "data")
    for name, memory in (("h1", 8192), ("h2", 4096)):
        node = node_xml(tmp_path / f"{name}.xml")
        ctx.service.add_host(name, f"test://{node}", 8, memory, 100, "t", new_request_id())
    repo = ClaimRacedOnce(ctx.app, ctx.store)
    pm = ProcessManager(repo, ctx.hosts, ctx.images, ctx.volumes, StepRecorder(repo),
                        HostRanking(repo), Settings(shutdown_timeout=0))
    vm = ctx.service.boot(name="vm1", host="h1", vcpus=1, memory_mb=1024, disk_gb=1,
                          image_id=None, volume_backed=False, user="t",
                          request_id=new_request_id())
    pm.drive(vm.id)
    ctx.service.request("shelve", "vm1", "t", new_request_id())
    pm.drive(vm.id)
    repo.armed = True  # the unshelve picks h1 (most free memory), which the rival then fills
    ctx.service.request("unshelve", "vm1", "t", new_request_id())
    pm.drive(vm.id)
    assert repo.raced
    events = list(ctx.app.events.get(vm.id))[-6:]
    assert [type(e).__name__ for e in events] == [
        "UnshelveRequested", "ResourcesClaimed", "NetworkSetUp", "Spawned", "ImageDeleted",
        "Unshelved"]
    assert [e.host for e in events[1:4]] == ["h2"] * 3  # each step where the claim is
    assert ctx.repo.get(vm.id).host == "h2"
    assert set(ctx.repo.get(host_id_for("h2")).claims) == {str(vm.id)}
    assert set(ctx.repo.get(host_id_for("h1")).claims) == {"rival"}
    assert str(vm.id) in ctx.hosts.driver("h2").domains()
    assert str(vm.id) not in ctx.hosts.driver("h1").domains()
    ctx.close()


def test_claims_in_flight_in_one_serve_go_to_different_hosts(
    store_url: str, tmp_path: Path
) -> None:
    """Four claims chosen before any is saved (four drive threads of one serve) go to the
    four equal hosts, one each, as Nova's scheduler consumes each request from its host
    state: they no longer all pick the same best host, where all but one lost the race
    at save and placed again. Once a claim is seen saved, its choice stops counting."""
    ctx = Context(store_url, tmp_path / "data")
    for name in ("h1", "h2", "h3", "h4"):
        node = node_xml(tmp_path / f"{name}.xml")
        ctx.service.add_host(name, f"test://{node}", 8, 8192, 100, "t", new_request_id())
    ranking = HostRanking(ctx.repo)
    vms = [ctx.service.boot(name=f"vm{n}", host=None, vcpus=1, memory_mb=1024, disk_gb=1,
                            image_id=None, volume_backed=False, user="t",
                            request_id=new_request_id()) for n in range(4)]
    chosen = [ranking.choose_host(vm) for vm in vms]
    assert sorted(host.name for host in chosen) == ["h1", "h2", "h3", "h4"]
    # The first claim saved (on h4: ties go to the last name): its choice is forgotten,
    # so its memory counts once, in h4's own claims, and not twice.
    first, host = vms[0], chosen[0]
    host.claim(str(first.id), 1, 1024, 1, "t", "req")
    first.record_claimed(user="t", request_id="req", host=host.name)
    ctx.repo.save(host, first)
    ranking.saw(host)
    again = ranking.choose_host(ctx.service.boot(
        name="vm9", host=None, vcpus=1, memory_mb=1024, disk_gb=1, image_id=None,
        volume_backed=False, user="t", request_id=new_request_id()))
    assert again.name == "h4"  # 7168 MB free on each (counted twice, h4 had 6144)
    ctx.close()


class CountingConflicts(EventStoreRepository):
    """The real store, counting the saves it refused for a version conflict."""

    conflicts = 0

    def save(self, *aggregates: Any) -> None:
        try:
            super().save(*aggregates)
        except RecordConflict:
            self.conflicts += 1
            raise


def test_claims_on_one_host_in_one_serve_wait_for_each_other(
    store_url: str, tmp_path: Path
) -> None:
    """Eight drive threads of one serve booting onto one host (a `serve --host` owns one
    host, and every boot asks for it): each claim waits for the one before it instead of
    racing it, so none is refused at save (without the wait: 88 refused saves here, and
    boots failed with 'gave up claiming after 10 races for the same hosts')."""
    ctx = Context(store_url, tmp_path / "data")
    node = node_xml(tmp_path / "h1.xml")
    ctx.service.add_host("h1", f"test://{node}", 64, 65536, 1000, "t", new_request_id())
    repo = CountingConflicts(ctx.app, ctx.store)
    pm = ProcessManager(repo, ctx.hosts, ctx.images, ctx.volumes, StepRecorder(repo),
                        HostRanking(repo), Settings(shutdown_timeout=0))
    vms = [ctx.service.boot(name=f"vm{n}", host="h1", vcpus=1, memory_mb=512, disk_gb=1,
                            image_id=None, volume_backed=False, user="t",
                            request_id=new_request_id()) for n in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda vm: pm.drive(vm.id), vms))
    assert repo.conflicts == 0
    assert {ctx.repo.get(vm.id).vm_state for vm in vms} == {"active"}
    assert len(ctx.repo.get(host_id_for("h1")).claims) == 24
    ctx.close()
