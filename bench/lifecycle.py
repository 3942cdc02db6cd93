"""Lifecycle throughput: N instances booted on H test-driver hosts, shelved (offload at
once) and unshelved, through the service's recorded requests and real `shelf serve`
processes (`--workers`, each owning its share of the hosts); then the same libvirt calls
in a bare loop with no event sourcing.
Prints cycles/s and events/s of each, the CPU a cycle costs on each side (and so the
highest ratio this machine's cores allow at that cost), and `ratio = shelf_rate / bare_rate`
last.

    python -m bench.lifecycle --store postgres --instances 1000 --hosts 20

A test-driver host's pool holds 100 GB, so N instances of 1 GB need more than N/100 hosts.

A request is recorded by the same `LifecycleService` call that `shelf shelve` makes, in
this process (starting a Python process per request would measure Python, not shelf).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from adapters.images import DirectoryImageStore
from adapters.libvirt_host import LibvirtHosts
from application.bootstrap import Context
from bench.common import bench_store, figure, machine, note, store_options, tmp_dir
from bench.cpu import DATABASE_SERVER, CpuMeter, pids_named
from domain.ports import DomainSpec
from domain.service import new_request_id

NODE = ("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>256</cores><threads>1</threads>"
        "<active>256</active><mhz>2000</mhz></cpu><memory>1073741824</memory></node>\n")


TEST_POOL_GB = 100
TARGET_RATIO = 0.8  # issue 5's target: how much CPU per cycle it leaves is printed too


def node_uri(folder: Path, name: str) -> str:
    node = folder / f"{name}.xml"
    node.write_text(NODE)
    return f"test://{node}"


class ShelfRun:
    """The service, and `workers` real `shelf serve` processes, on a fresh store. With
    several, the hosts are dealt out among them (`serve --host`), one serve per host as on
    real hosts (and a test-driver host lives inside one process)."""

    def __init__(self, url: str, hosts: int, threads: int, workers: int) -> None:
        self.work = tmp_dir("shelf-bench-lifecycle-")
        self.ctx = Context(url, self.work / "data")
        self.names = [f"h{number:03d}" for number in range(hosts)]
        for name in self.names:
            # 100 GB: what a test-driver host's storage pool really holds, so placement
            # refuses (rather than libvirt failing) once a host's pool is full.
            self.ctx.service.add_host(name, node_uri(self.work, name), 100_000, 10_000_000,
                                      TEST_POOL_GB, "bench", new_request_id())
        self.ctx.projector.ensure_schema()  # wait_for reads it before a worker's first pass
        self.serves: list[subprocess.Popen[bytes]] = []
        self.ids: list[str] = []
        try:
            for number in range(workers):
                self.serves.append(self._start_serve(number, workers, threads))
        except BaseException:
            self.close()
            raise

    def _start_serve(self, number: int, workers: int, threads: int) -> subprocess.Popen[bytes]:
        owned = self.names[number::workers] if workers > 1 else []
        command = [sys.executable, "-m", "cli.main", "--store", self.ctx.store.url, "serve",
                   "--threads", str(threads), "--shutdown-timeout", "0",
                   *(arg for name in owned for arg in ("--host", name))]
        # info: serve's own default, so the serves log each step as deployed; their
        # `serve.stopped` line also carries the group-commit counts printed below.
        env = {**os.environ, "SHELF_DATA_DIR": str(self.work / "data"),
               "SHELF_LOG_LEVEL": "info"}
        with (self.work / f"serve-{number}.log").open("wb") as log:  # the child keeps it
            return subprocess.Popen(command, env=env, stdout=log, stderr=log,
                                    cwd=Path(__file__).resolve().parent.parent)

    def boot_all(self, count: int) -> None:
        for number in range(count):
            instance = self.ctx.service.boot(
                name=f"vm{number}", host=self.names[number % len(self.names)], vcpus=1,
                memory_mb=64, disk_gb=1, image_id=None, volume_backed=False, user="bench",
                request_id=new_request_id())
            self.ids.append(str(instance.id))
        self.wait_for("active")

    def request_all(self, action: str, then: str) -> None:
        for instance_id in self.ids:
            self.ctx.service.request(action, instance_id, "bench", new_request_id())
        self.wait_for(then)

    def wait_for(self, vm_state: str) -> None:
        """Until every instance is idle in `vm_state`, read from the `instances` projection.
        `serve` writes it as soon as it goes idle (and every 0.5 s while busy), so the end of
        a phase shows within a poll. (Catching up here as well, as a read command would,
        made two runners take turns and each fold from the store what the other had.)"""
        db = Context(self.ctx.store.url, self.work / "data").db
        try:
            while True:
                rows = db.query("SELECT count(*) AS n FROM instances "
                                "WHERE vm_state = ? AND task_state IS NULL", (vm_state,))
                if rows and rows[0]["n"] == len(self.ids):
                    return
                stuck = db.query("SELECT name, fault FROM instances WHERE task_state IS NULL "
                                 "AND vm_state != ? AND fault IS NOT NULL", (vm_state,))
                if stuck:  # a failed step: say so rather than wait for ever
                    raise SystemExit(f"bench: {stuck[0]['name']} failed: {stuck[0]['fault']}")
                if any(serve.poll() is not None for serve in self.serves):
                    raise SystemExit(f"bench: a serve stopped; see its log in {self.work}")
                time.sleep(0.02)
        finally:
            db.close()

    def cpu_meter(self) -> CpuMeter:
        """The serves, this process (the requests, and polling for the end), and on
        PostgreSQL its server's processes on this machine (all of them: the bench assumes
        nothing else keeps that server busy)."""
        groups = {"serves": lambda: [serve.pid for serve in self.serves],
                  "bench process (requests)": lambda: [os.getpid()]}
        if self.ctx.store.backend == "postgres":
            if pids_named(DATABASE_SERVER):
                groups["database server"] = lambda: pids_named(DATABASE_SERVER)
            else:
                note("bench: no PostgreSQL server runs on this machine: its CPU is not counted")
        return CpuMeter(groups)

    def events(self) -> int:
        return self.ctx.app.recorder.max_notification_id() or 0

    def stop_serves(self) -> Commits:
        """Stop every serve; their group-commit counts, from the line each logs on stopping."""
        for serve in self.serves:
            serve.send_signal(signal.SIGTERM)
        commits = Commits()
        for number, serve in enumerate(self.serves):
            serve.wait(timeout=120)
            commits.add(self.work / f"serve-{number}.log")
        return commits

    def close(self) -> None:
        for serve in self.serves:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
        self.ctx.close()
        shutil.rmtree(self.work, ignore_errors=True)


class Commits:
    """Transactions and saves written by the serves' group commits."""

    def __init__(self) -> None:
        self.transactions = self.saves = self.split = 0

    def add(self, log: Path) -> None:
        for line in log.read_text(errors="replace").splitlines():
            if '"serve.stopped"' in line:
                stopped = json.loads(line)
                self.transactions += stopped["transactions"]
                self.saves += stopped["saves"]
                self.split += stopped["split"]


class BareRun:
    """The same libvirt calls as the process manager makes, in a plain loop."""

    def __init__(self, hosts: int) -> None:
        self.work = tmp_dir("shelf-bench-bare-")
        uris = {f"b{number:03d}": node_uri(self.work, f"b{number:03d}")
                for number in range(hosts)}
        self.names = list(uris)
        self.drivers = LibvirtHosts(uris.__getitem__, self.work / "data")
        self.images = DirectoryImageStore(self.work / "data" / "images")
        self.specs: list[tuple[str, DomainSpec]] = []

    def boot_all(self, count: int) -> None:
        for number in range(count):
            host = self.names[number % len(self.names)]
            spec = DomainSpec(instance_id=str(uuid.uuid4()), name=f"vm{number}", vcpus=1,
                              memory_mb=64, disk_gb=1, mac=_mac(number), ip=_ip(number))
            driver = self.drivers.driver(host)
            driver.add_dhcp_host(spec.mac, spec.ip, spec.name)
            driver.create_disk(spec, None)
            driver.define_and_start(spec)
            self.specs.append((host, spec))

    def shelve_all(self) -> None:
        for host, spec in self.specs:
            driver = self.drivers.driver(host)
            driver.power_off(spec.instance_id, 0.0, 10.0)
            image_id = str(uuid.uuid5(uuid.NAMESPACE_OID, spec.instance_id))
            driver.export_disk(spec.instance_id, self.images.path_for(image_id))
            self.images.commit(image_id, f"{spec.name}-shelved", spec.instance_id)
            driver.remove_dhcp_host(spec.mac)
            driver.undefine(spec.instance_id)
            driver.delete_disk(spec.instance_id)

    def unshelve_all(self) -> None:
        for host, spec in self.specs:
            driver = self.drivers.driver(host)
            image_id = str(uuid.uuid5(uuid.NAMESPACE_OID, spec.instance_id))
            driver.add_dhcp_host(spec.mac, spec.ip, spec.name)
            driver.create_disk(spec, self.images.path_for(image_id))
            driver.define_and_start(spec)
            self.images.delete(image_id)

    def close(self) -> None:
        self.drivers.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _ip(number: int) -> str:
    return f"10.213.{2 + number // 250}.{2 + number % 250}"


def _mac(number: int) -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in (213, 2 + number // 250, 2 + number % 250))


def timed(action: Callable[[], object], meter: CpuMeter) -> float:
    # Each side starts with nothing of the other's left to write back: the disk writes
    # one side leaves dirty would otherwise slow the next side's fsyncs.
    os.sync()
    meter.start()
    started = time.monotonic()
    action()
    elapsed = time.monotonic() - started
    meter.stop()
    return elapsed


def print_cpu(shelf: CpuMeter, shelf_seconds: float, bare: CpuMeter, bare_seconds: float,
              count: int) -> None:
    """Where a cycle's CPU goes on each side, and how many times the bare loop's CPU shelf
    spends. Then what this machine's cores allow: the ratio shelf would reach at its CPU
    per cycle with every core busy all the time (a ceiling that only less CPU per cycle,
    or more cores, can raise), and how much of that CPU would have to go for
    TARGET_RATIO even then."""
    cpus = len(os.sched_getaffinity(0))  # the cores this process may run on
    shelf_cpu, bare_cpu = shelf.total() / count, bare.total() / count
    figure("shelf CPU per cycle", 1000 * shelf_cpu, "ms")
    for name, seconds in shelf.seconds.items():
        figure(f"  {name}", 1000 * seconds / count, "ms")
    figure("shelf cores busy", shelf.total() / shelf_seconds)
    figure("bare CPU per cycle", 1000 * bare_cpu, "ms")
    figure("bare cores busy", bare.total() / bare_seconds)
    if not shelf_cpu or not bare_cpu:  # a run too short to be charged a clock tick
        note("bench: too little CPU measured to compare")
        return
    figure("shelf CPU / bare CPU", shelf_cpu / bare_cpu)
    ceiling = cpus * bare_seconds / (shelf_cpu * count)  # cycles/s at full cores / bare's
    figure(f"ceiling ratio on {cpus} cpus", ceiling)
    cut = max(0.0, 1 - ceiling / TARGET_RATIO)
    figure(f"CPU to cut for {TARGET_RATIO} on {cpus} cpus", 100 * cut, "%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="serve --threads")
    parser.add_argument("--workers", type=int, default=1,
                        help="serve processes, the hosts dealt out among them (serve --host)")
    store_options(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= args.hosts:  # each serve owns at least one host
        parser.error("--workers must be between 1 and --hosts")
    count = args.instances
    with bench_store(args.store, args.keep) as url:
        shelf = ShelfRun(url, args.hosts, args.threads, args.workers)
        try:
            note(f"shelf: booting {count}")
            shelf.boot_all(count)
            before = shelf.events()
            note("shelf: shelving and unshelving")
            shelf_cpu = shelf.cpu_meter()
            shelf_seconds = timed(lambda: shelf.request_all("shelve", "shelved_offloaded"),
                                  shelf_cpu)
            shelf_seconds += timed(lambda: shelf.request_all("unshelve", "active"), shelf_cpu)
            cycle_events = shelf.events() - before
            backend = shelf.ctx.store.backend
            commits = shelf.stop_serves()  # whole run, boots included
        finally:
            shelf.close()
    bare = BareRun(args.hosts)
    try:
        note(f"bare: booting {count}")
        bare.boot_all(count)
        note("bare: shelving and unshelving")
        bare_cpu = CpuMeter({"bare loop": lambda: [os.getpid()]})
        bare_seconds = timed(bare.shelve_all, bare_cpu) + timed(bare.unshelve_all, bare_cpu)
    finally:
        bare.close()
    shelf_rate, bare_rate = count / shelf_seconds, count / bare_seconds
    print(f"# bench/lifecycle on {backend}, {count} instances, {args.hosts} hosts, "
          f"{args.workers} serve x {args.threads} threads, {machine()}")
    figure("shelf cycles/s", shelf_rate, "cycles/s")
    figure("shelf events/s", cycle_events / shelf_seconds, "events/s")
    figure("shelf events per cycle", cycle_events / count)
    figure("saves per transaction", commits.saves / max(1, commits.transactions))
    figure("batches split by a conflict", commits.split)
    figure("bare cycles/s", bare_rate, "cycles/s")
    print_cpu(shelf_cpu, shelf_seconds, bare_cpu, bare_seconds, count)
    print(f"ratio = {shelf_rate / bare_rate:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
