"""A fleet of `shelf serve --host` processes on one PostgreSQL store (issue 18, docs/fleet.md):
each serve is told of its own hosts' work only, and drives (loads, folds) no instance of
another serve's hosts; a lost or repeated wake-up costs latency only; a serve killed
mid-run leaves its hosts' operations to its restart, while the others go on; an
unshelve claimed by whichever serve dispatches reaches the claimed host's serve; a host
added while the serves run is served by its new serve.

Real subprocesses (`python -m cli.main serve --host ...`), libvirt's test driver. Which
instances a serve drove is read from its log (`drive.start`, at debug level), and
`serve.stopped` carries its count of drives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.leases import InstanceLeases
from adapters.serving import serving_key
from adapters.work_table import channel
from application.bootstrap import Context
from domain.instance import Instance
from domain.service import find, new_request_id
from tests.conftest import node_xml

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120.0


class Fleet:
    """K serves; serve k owns hosts h{k}, h{k+K}, ... (`per_serve` each)."""

    def __init__(self, url: str, tmp: Path, serves: int, per_serve: int = 2,
                 threads: int = 2) -> None:
        self.url, self.tmp, self.threads = url, tmp, threads
        self.ctx = Context(url, tmp / "data")
        self.hosts = [f"h{n}" for n in range(serves * per_serve)]
        self.owned = [frozenset(self.hosts[k::serves]) for k in range(serves)]
        for name in self.hosts:
            self.add_host(name)
        self.ctx.projector.ensure_schema()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * serves
        self.starts = [0] * serves
        for k in range(serves):
            self.start(k)

    def add_host(self, name: str, memory_mb: int = 8192) -> None:
        node = node_xml(self.tmp / f"{name}.xml", 8, memory_mb)
        self.ctx.service.add_host(name, f"test://{node}", 8, memory_mb, 100, "tester",
                                  new_request_id())

    def start(self, k: int) -> None:
        self.starts[k] += 1
        argv = [arg for host in sorted(self.owned[k]) for arg in ("--host", host)]
        env = {**os.environ, "SHELF_DATA_DIR": str(self.tmp / "data"),
               "SHELF_LOG_LEVEL": "debug"}
        with self.log(k).open("wb") as log:
            self.procs[k] = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "--store", self.url, "serve",
                 "--shutdown-timeout", "0", "--threads", str(self.threads), *argv],
                env=env, stdout=log, stderr=log, cwd=ROOT)

    def wait_served(self, host: str) -> None:
        """Until a serve holds `host`'s serving lease (placement counts it served then)."""
        leases = InstanceLeases(self.ctx.store)
        try:
            deadline = time.monotonic() + DEADLINE
            while not leases.held_elsewhere(serving_key(self.ctx.store, host)):
                assert time.monotonic() < deadline, f"no serve of {host} started"
                time.sleep(0.1)
        finally:
            leases.close()

    def log(self, k: int) -> Path:
        return self.tmp / f"serve-{k}-{self.starts[k]}.log"

    def kill(self, k: int) -> None:
        proc = self.procs[k]
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.procs[k] = None

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            if proc is not None:
                proc.wait(timeout=60)

    def close(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.ctx.close()

    def boot(self, host: str, memory_mb: int = 256) -> uuid.UUID:
        return self.ctx.service.boot(
            name=f"vm-{uuid.uuid4().hex[:8]}", host=host, vcpus=1, memory_mb=memory_mb,
            disk_gb=1, image_id=None, volume_backed=False, user="tester",
            request_id=new_request_id()).id

    def request(self, action: str, ids: list[uuid.UUID], host: str | None = None) -> None:
        for instance_id in ids:
            self.ctx.service.request(action, str(instance_id), "tester", new_request_id(),
                                     host=host)

    def instance(self, instance_id: uuid.UUID) -> Instance:
        found = find(self.ctx.repo, instance_id, Instance)
        assert found is not None
        return found

    def settle(self, ids: list[uuid.UUID], vm_state: str, within: float = DEADLINE) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(self.done(i, vm_state) for i in ids):
                return
            assert all(p is None or p.poll() is None for p in self.procs), "a serve died"
            time.sleep(0.1)
        states = {str(i): (self.instance(i).vm_state, self.instance(i).task_state)
                  for i in ids}
        raise AssertionError(f"not all {vm_state} within {within} s: {states}")

    def done(self, instance_id: uuid.UUID, vm_state: str) -> bool:
        instance = self.instance(instance_id)
        assert instance.fault is None, instance.fault
        return instance.vm_state == vm_state and instance.next_step() is None

    def driven(self, k: int) -> set[uuid.UUID]:
        """The instances serve k drove, over all its runs."""
        ids = set()
        for run in range(1, self.starts[k] + 1):
            for line in (self.tmp / f"serve-{k}-{run}.log").read_text().splitlines():
                if '"drive.start"' in line:
                    ids.add(uuid.UUID(json.loads(line)["instance_id"]))
        return ids

    def stopped_drives(self, k: int) -> int:
        for line in self.log(k).read_text().splitlines():
            if '"serve.stopped"' in line:
                return int(json.loads(line)["drives"])
        raise AssertionError(f"serve {k} logged no serve.stopped")

    def event_kinds(self, instance_id: uuid.UUID) -> list[str]:
        mapper = self.ctx.app.mapper
        return [type(mapper.to_domain_event(stored)).__name__
                for stored in self.ctx.app.recorder.select_events(instance_id)]


@pytest.fixture
def fleet_of(pg_url: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Fleet] = []

    def make(serves: int, per_serve: int = 2, threads: int = 2) -> Fleet:
        made.append(Fleet(pg_url, tmp_path, serves, per_serve, threads))
        return made[-1]

    yield make
    for fleet in made:
        fleet.close()


def cycle(fleet: Fleet, ids: list[uuid.UUID], pinned: bool) -> None:
    """Shelve (offload at once) and unshelve `ids`, onto their own hosts if `pinned`."""
    fleet.request("shelve", ids)
    fleet.settle(ids, "shelved_offloaded")
    for instance_id in ids:
        host = fleet.instance(instance_id).target_host if pinned else None
        fleet.request("unshelve", [instance_id], host=host)
    fleet.settle(ids, "active")


def same_steps(fleet: Fleet, ids: list[uuid.UUID]) -> None:
    """Every instance recorded the same steps, each once (one took a step twice, or
    lost one, if not)."""
    kinds = {instance_id: fleet.event_kinds(instance_id) for instance_id in ids}
    first = kinds[ids[0]]
    assert all(found == first for found in kinds.values()), kinds


@pytest.mark.parametrize("serves", [2, 4])
def test_each_serve_drives_only_its_own_hosts_instances(fleet_of: Any, serves: int) -> None:
    fleet: Fleet = fleet_of(serves)
    ids = [fleet.boot(host) for host in fleet.hosts for _ in range(2)]
    fleet.settle(ids, "active")
    cycle(fleet, ids, pinned=True)
    fleet.stop()
    for k in range(serves):
        driven = fleet.driven(k)
        assert driven, f"serve {k} drove nothing"
        foreign = {i for i in driven if fleet.instance(i).host not in fleet.owned[k]}
        assert foreign == set(), f"serve {k} drove {len(foreign)} of other serves' instances"
        assert fleet.stopped_drives(k) >= len(driven)
    same_steps(fleet, ids)


def test_an_unshelve_claimed_by_any_serve_reaches_the_claimed_hosts_serve(
        fleet_of: Any) -> None:
    fleet: Fleet = fleet_of(2, per_serve=1)
    ids = [fleet.boot(host) for host in fleet.hosts]
    fleet.settle(ids, "active")
    fleet.request("shelve", ids)
    fleet.settle(ids, "shelved_offloaded")
    fleet.add_host("big", memory_mb=65536)  # added while they run: the freest host now
    fleet.owned.append(frozenset({"big"}))
    fleet.procs.append(None)
    fleet.starts.append(0)
    fleet.start(2)
    fleet.wait_served("big")
    fleet.request("unshelve", ids)  # placed by whichever serve dispatches
    fleet.settle(ids, "active")
    assert {fleet.instance(i).host for i in ids} == {"big"}
    fleet.stop()
    assert fleet.driven(2) >= set(ids)  # the claimed host's serve spawned them
    same_steps(fleet, ids)


def test_a_lost_or_repeated_wake_up_costs_latency_only(
        fleet_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet: Fleet = fleet_of(2, per_serve=1)
    ids = [fleet.boot(host) for host in fleet.hosts]
    fleet.settle(ids, "active")
    # Lost: this process's saves write their work rows but send no notice. (A mock: a
    # notice PostgreSQL drops can't be made on purpose; this is what the serve sees.)
    monkeypatch.setattr("adapters.work_table.notices", lambda *_: ([], []))
    fleet.request("stop", ids)
    monkeypatch.undo()
    fleet.settle(ids, "stopped")  # found by the serves' sweeps
    # Repeated: each notice sent twice more, after the step it asked for was taken.
    fleet.request("start", ids)
    fleet.settle(ids, "active")
    with psycopg.connect(fleet.ctx.store.psycopg_conninfo(), autocommit=True) as conn:
        for instance_id, host in zip(ids, fleet.hosts, strict=True):
            version = fleet.instance(instance_id).version
            for _ in range(2):
                conn.execute("SELECT pg_notify(%s, %s)",
                             (channel("public", host), f"{instance_id} {version}"))
    cycle(fleet, ids, pinned=True)
    fleet.stop()
    same_steps(fleet, ids)


def test_a_killed_serve_leaves_its_hosts_work_to_its_restart(fleet_of: Any) -> None:
    fleet: Fleet = fleet_of(4)
    ids = {host: [fleet.boot(host) for _ in range(2)] for host in fleet.hosts}
    every = [i for group in ids.values() for i in group]
    fleet.settle(every, "active")
    fleet.request("shelve", every)
    fleet.settle(every, "shelved_offloaded")
    victims = [i for host in fleet.owned[0] for i in ids[host]]
    others = [i for i in every if i not in victims]
    for host, group in ids.items():
        fleet.request("unshelve", group, host=host)
    fleet.kill(0)  # mid-run: some of its instances' steps taken, some not
    fleet.settle(others, "active")  # the others go on meanwhile
    fleet.start(0)
    fleet.settle(victims, "active")
    fleet.stop()
    same_steps(fleet, every)


def backends_of(conn: psycopg.Connection[Any], pid: int) -> list[str]:
    """The application names of the PostgreSQL backends process `pid` is connected to, as
    pg_stat_activity shows them: those whose client port is one of the process's TCP
    sockets (read from /proc), not what the process says of itself."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    rows = conn.execute("SELECT client_port, application_name FROM pg_stat_activity "
                        "WHERE datname = current_database()").fetchall()
    return sorted(name for port, name in rows if port in ports)


def test_a_serve_holds_few_connections(fleet_of: Any) -> None:
    """Under load a serve holds at most 5 connections to PostgreSQL, the dispatching one
    (it writes the projections) 6, with the bench's 4 drive threads: a few hundred
    serves fit one server."""
    fleet: Fleet = fleet_of(2, per_serve=2, threads=4)
    for host in fleet.hosts:
        fleet.wait_served(host)
    peaks: dict[int, list[str]] = {0: [], 1: []}
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(fleet.ctx.store.psycopg_conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                for k, proc in enumerate(fleet.procs):
                    assert proc is not None
                    seen = backends_of(conn, proc.pid)
                    if len(seen) > len(peaks[k]):
                        peaks[k] = seen
                stop.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        ids = [fleet.boot(host) for host in fleet.hosts for _ in range(3)]
        fleet.settle(ids, "active")
        cycle(fleet, ids, pinned=False)  # unshelves placed by the dispatching serve
    finally:
        stop.set()
        sampler.join()
    fleet.stop()
    counts = sorted(len(seen) for seen in peaks.values())
    assert counts[0] >= 3, peaks  # seen at all: the events, the leases, the wake-ups
    assert counts[0] <= 5 and counts[1] <= 6, peaks
    same_steps(fleet, ids)
