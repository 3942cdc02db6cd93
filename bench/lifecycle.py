"""Lifecycle throughput: N instances booted on H test-driver hosts, shelved (offload at
once) and unshelved, through the service's recorded requests and `serve`'s worker and
process manager; then the same libvirt calls in a bare loop with no event sourcing.
Prints cycles/s and events/s of each and `ratio = shelf_rate / bare_rate` last.

    python -m bench.lifecycle --store postgres --instances 1000 --hosts 20

A test-driver host's pool holds 100 GB, so N instances of 1 GB need more than N/100 hosts.

A request is recorded by the same `LifecycleService` call that `shelf shelve` makes, in
this process (starting a Python process per request would measure Python, not shelf).
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
import uuid
from pathlib import Path

from adapters.images import DirectoryImageStore
from adapters.libvirt_host import LibvirtHosts
from bench.common import bench_store, figure, machine, note, store_options, tmp_dir
from cli.bootstrap import Context
from cli.worker import Worker
from domain.ports import DomainSpec
from domain.process_manager import Settings
from domain.service import new_request_id

NODE = ("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>256</cores><threads>1</threads>"
        "<active>256</active><mhz>2000</mhz></cpu><memory>1073741824</memory></node>\n")


TEST_POOL_GB = 100


def node_uri(folder: Path, name: str) -> str:
    node = folder / f"{name}.xml"
    node.write_text(NODE)
    return f"test://{node}"


class ShelfRun:
    """The service and a running worker on a fresh store."""

    def __init__(self, url: str, hosts: int, threads: int) -> None:
        self.work = tmp_dir("shelf-bench-lifecycle-")
        self.ctx = Context(url, "bench", self.work / "data")
        for number in range(hosts):
            name = f"h{number:03d}"
            # 100 GB: what a test-driver host's storage pool really holds, so placement
            # refuses (rather than libvirt failing) once a host's pool is full.
            self.ctx.service.add_host(name, node_uri(self.work, name), 100_000, 10_000_000,
                                      TEST_POOL_GB, "bench", new_request_id())
        self.names = [f"h{number:03d}" for number in range(hosts)]
        self.ctx.projector.ensure_schema()  # wait_for reads it before the worker's first pass
        self.worker = Worker(self.ctx, Settings(shutdown_timeout=0), threads=threads)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()
        self.ids: list[str] = []

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
        db = Context(self.ctx.store.url, "bench", self.work / "data").db
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
                time.sleep(0.02)
        finally:
            db.close()

    def events(self) -> int:
        return self.ctx.app.recorder.max_notification_id() or 0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.ctx.close()
        shutil.rmtree(self.work, ignore_errors=True)


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


def timed(action: object) -> float:
    started = time.monotonic()
    action()  # type: ignore[operator]
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="serve --threads")
    store_options(parser)
    args = parser.parse_args(argv)
    count = args.instances
    with bench_store(args.store, args.keep) as url:
        shelf = ShelfRun(url, args.hosts, args.threads)
        try:
            note(f"shelf: booting {count}")
            shelf.boot_all(count)
            before = shelf.events()
            note("shelf: shelving and unshelving")
            shelf_seconds = timed(lambda: shelf.request_all("shelve", "shelved_offloaded"))
            shelf_seconds += timed(lambda: shelf.request_all("unshelve", "active"))
            cycle_events = shelf.events() - before
            backend = shelf.ctx.store.backend
            commits = shelf.ctx.repo.commits  # whole run, boots included
        finally:
            shelf.close()
    bare = BareRun(args.hosts)
    try:
        note(f"bare: booting {count}")
        bare.boot_all(count)
        note("bare: shelving and unshelving")
        bare_seconds = timed(bare.shelve_all) + timed(bare.unshelve_all)
    finally:
        bare.close()
    shelf_rate, bare_rate = count / shelf_seconds, count / bare_seconds
    print(f"# bench/lifecycle on {backend}, {count} instances, {args.hosts} hosts, "
          f"{args.threads} threads, {machine()}")
    figure("shelf cycles/s", shelf_rate, "cycles/s")
    figure("shelf events/s", cycle_events / shelf_seconds, "events/s")
    figure("shelf events per cycle", cycle_events / count)
    figure("saves per transaction", commits.saves / max(1, commits.transactions))
    figure("batches split by a conflict", commits.split)
    figure("bare cycles/s", bare_rate, "cycles/s")
    print(f"ratio = {shelf_rate / bare_rate:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
