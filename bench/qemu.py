"""Real-hypervisor overhead: one shelve (offload at once) + unshelve of a `qemu:///system`
instance with a real qcow2 disk holding M MB of data, through `shelf` (CLI requests and a
`serve` process), against the same work done bare: libvirt-python calls as `virsh` would
make them plus `qemu-img convert` (and an fsync of the snapshot before the disk it copies
is deleted, as any script must). Prints both times and `ratio = shelf / bare` last
(orchestration adds <= 10% when the ratio is <= 1.10).

    python -m bench.qemu --disk-mb 512
    python -m bench.qemu --data-dir /mnt/xfs/shelf --disk-mb 8192   # a storage strategy

With `--data-dir DIR`, shelf's data directory is DIR (the filesystem to measure: the
strategy shelf picks for it is printed, see README's "Where to put the data directory")
and the bare side keeps its disk in `DIR/hosts/` and its snapshot in `DIR/images/`, so
that both copy between the same filesystems. The storage part (the steps that copy,
clone or delete disks: Snapshot, Destroy, Spawn, DeleteImage) is printed apart.

The data is real: M MB of a non-zero pattern written by qemu-io into the image (after
the guest's partitions), so the instance's disk, spawned from it, holds M MB of
allocated clusters that a copy must read and write (`qemu-img convert` skips only
unallocated or zero clusters); a clone shares them instead. Each of the 1 GiB writes
lands in few extents: a long-lived disk written piecemeal has many more, which a clone
pays for (per extent) and a copy does not.

The guest is the tests' real Linux guest (bench/guest_image.py) under TCG, with the data
written after its partitions. Both sides ask it for a clean (ACPI) shutdown and wait for
it, and both report what the guest sees: shelve request -> guest powered off, and unshelve
request -> guest has its address again (its console's "bound" line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import libvirt

from adapters.libvirt_xml import DiskSource, DomainOptions, dhcp_host_xml, domain_xml
from bench.common import figure, machine, median, note, tmp_dir
from bench.guest_image import BOUND_LINE, MEMORY_MB, console_text, guest_images, wait_for_console
from domain.ports import DomainSpec

SHELF = str(Path(sys.executable).with_name("shelf"))
URI = "qemu:///system"


def drop_page_cache() -> None:
    """Both sides start cold: how a disk was written at boot (libvirt's copy bypasses the
    page cache, qemu-img's does not) must not decide how fast its snapshot reads it."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        note("bench: can't drop the page cache (not root?): the ratio may favour one side")


GUEST_MB = 65  # the guest's partitions; the data goes after them


def make_image(folder: Path, disk_mb: int) -> Path:
    """The guest image with `disk_mb` MB of data after its partitions (so copies move real
    bytes)."""
    image = folder / "base.qcow2"
    shutil.copy(guest_images().listens, image)
    subprocess.run(["qemu-img", "resize", "-q", str(image), f"{GUEST_MB + disk_mb}M"],
                   check=True)
    writes = []  # qemu-io takes at most 2 GiB per request
    for offset in range(0, disk_mb, 1024):
        size = min(1024, disk_mb - offset)
        writes += ["-c", f"write -P 0x5a {GUEST_MB + offset}M {size}M"]
    subprocess.run(["qemu-io", *writes, str(image)], check=True, capture_output=True)
    return image


def disk_gb_for(disk_mb: int) -> int:
    """The flavor's disk: room for the guest's partitions and the data."""
    return -(-(GUEST_MB + disk_mb) // 1024)


class ShelfSide:
    def __init__(self, image: Path, disk_mb: int, data_dir: Path | None) -> None:
        self.root = tmp_dir("shelf-bench-qemu-")
        self.data_dir = data_dir or self.root / "data"
        self.env = {**os.environ, "SHELF_STORE": f"sqlite:///{self.root}/shelf.db",
                    "SHELF_DATA_DIR": str(self.data_dir), "SHELF_LOG_LEVEL": "warning"}
        self.host = f"bench-{uuid.uuid4().hex[:6]}"
        self.disk_gb = disk_gb_for(disk_mb)
        self.shelf("host", "add", self.host, "--uri", URI, "--vcpus", "2", "--memory-mb",
                   "1024", "--disk-gb", str(self.disk_gb + 10), "--virt-type", "qemu")
        self.shelf("image", "import", "base", str(image))
        with open(self.root / "serve.log", "ab") as log:  # serve's 60 s clean shutdown
            self.serve = subprocess.Popen([SHELF, "serve"], env=self.env,
                                          stdout=subprocess.DEVNULL, stderr=log)
        self.guest_seconds: dict[str, float] = {}

    def shelf(self, *argv: str) -> str:
        done = subprocess.run([SHELF, *argv], env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench: shelf {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def cycle(self) -> float:
        instance_id = self.shelf("boot", "vm1", "--host", self.host, "--vcpus", "1",
                                 "--memory-mb", str(MEMORY_MB), "--disk-gb", str(self.disk_gb),
                                 "--image", "base", "--wait").strip()
        console = self.data_dir / "hosts" / self.host / "console" / f"{instance_id}.log"
        wait_for_console(console, BOUND_LINE)  # up, and listening for the power button
        drop_page_cache()
        started = time.monotonic()
        self.shelf("shelve", "vm1", "--wait")
        unshelving = time.monotonic()
        self.shelf("unshelve", "vm1", "--wait")
        total = time.monotonic() - started
        wait_for_console(console, BOUND_LINE)  # the log of the new domain
        self.guest_seconds["guest: bound after unshelve"] = time.monotonic() - unshelving
        return total

    def strategy(self) -> str:
        [row] = json.loads(self.shelf("host", "list", "--json"))
        return str(row.get("storage", "(not reported by host list)"))

    def step_seconds(self) -> dict[str, float]:
        """Where serve spent the time: each step of the shelve and the unshelve, from the
        audit trail (each step runs from the previous record to its own: the shelve's
        PowerOff is request -> guest powered off), then the seconds from the unshelve
        request to the guest's address."""
        spent: dict[str, float] = {}
        for action in json.loads(self.shelf("actions", "vm1", "--json"))[-2:]:
            for event in action["events"]:
                seconds = (_moment(event["finish_time"]) - _moment(event["start_time"]))
                key = f"{action['action']}: {event['event']}"
                spent[key] = spent.get(key, 0.0) + seconds
            spent[f"{action['action']}: in serve"] = (
                _moment(action["finish_time"]) - _moment(action["start_time"]))
        return {**spent, **self.guest_seconds}

    def close(self) -> None:
        try:
            instance = json.loads(self.shelf("show", "vm1", "--json"))
            self.shelf("delete", "vm1", "--wait")
            note(f"shelf side: {instance['id']} deleted")
        finally:  # a failed run leaves nothing behind either
            self.serve.terminate()
            self.serve.wait(timeout=60)
            if self.data_dir != self.root / "data":  # not ours: only what this run made
                self._remove_own_files()
            _drop_pools(self.root)
            shutil.rmtree(self.root, ignore_errors=True)

    def _remove_own_files(self) -> None:
        """This run's host directory, and its images (shelf has no image delete yet)."""
        own = self.data_dir / "hosts" / self.host
        _drop_pools(own)
        shutil.rmtree(own, ignore_errors=True)
        for image in json.loads(self.shelf("image", "list", "--json")):
            for path in (self.data_dir / "images").glob(f"{image['id']}.*"):
                path.unlink()


class BareSide:
    """What an operator's script would do: define, destroy, qemu-img convert, undefine."""

    def __init__(self, image: Path, data_dir: Path | None) -> None:
        self.root = tmp_dir("shelf-bench-bare-qemu-")
        self.conn = libvirt.open(URI)
        self.image, self.disk = image, self.root / "disk.qcow2"
        self.snapshot = self.root / "snapshot.qcow2"
        self.own: list[Path] = []  # what it made in the data directory
        if data_dir is not None:  # the disk where shelf's disks are, the snapshot in images/
            name = f"bare-{uuid.uuid4().hex[:6]}"
            self.own = [data_dir / "hosts" / name, data_dir / "images" / f"{name}.qcow2"]
            for folder in (self.own[0], self.own[1].parent):
                folder.mkdir(parents=True, exist_ok=True)
            self.disk, self.snapshot = self.own[0] / "disk.qcow2", self.own[1]
        self.spec = DomainSpec(instance_id=str(uuid.uuid4()), name="bare", vcpus=1,
                               memory_mb=MEMORY_MB, disk_gb=1, mac="52:54:00:d5:ff:fe",
                               ip="10.213.255.254")
        self.console = self.root / "console.log"
        self.xml = domain_xml(self.spec, DiskSource(str(self.disk), "qcow2"),
                              DomainOptions("qemu", machine="pc", cpu_model="qemu64"),
                              self.console)

    def _convert(self, source: Path, dest: Path) -> None:
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(source), str(dest)],
                       check=True)

    def _dhcp(self, command: int) -> None:
        network = self.conn.networkLookupByName("shelf-net")
        network.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                       dhcp_host_xml(self.spec.mac, self.spec.ip, self.spec.name),
                       libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                       | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)

    def _spawn(self, source: Path) -> None:
        self._dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST)
        self._start_from(source)

    def _start_from(self, source: Path) -> None:
        self._convert(source, self.disk)
        self.conn.defineXML(self.xml).create()

    def cycle(self) -> float:
        self._spawn(self.image)
        wait_for_console(self.console, BOUND_LINE)  # up, and listening for the power button
        self.spent: dict[str, float] = {}
        drop_page_cache()
        started = time.monotonic()
        domain = self.conn.lookupByName(f"shelf-{self.spec.instance_id}")
        self._timed("PowerOff", lambda: _clean_shutdown(domain))  # as shelf's serve asks
        self._timed("Snapshot", self._durable_snapshot)
        self._timed("CleanNetwork", lambda: self._dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE))
        self._timed("Destroy", lambda: self._undefine(domain))
        seen = len(console_text(self.console))  # the log is appended to, boot after boot
        unshelving = time.monotonic()
        self._timed("SetupNetwork",  # the unshelve
                    lambda: self._dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST))
        self._timed("Spawn", lambda: self._start_from(self.snapshot))
        self._timed("DeleteImage", self.snapshot.unlink)
        total = time.monotonic() - started
        wait_for_console(self.console, BOUND_LINE, seen)
        self.spent["guest: bound after unshelve"] = time.monotonic() - unshelving
        return total

    def _durable_snapshot(self) -> None:
        """qemu-img convert, then fsync: the disk is about to be deleted, so the snapshot
        must be on disk first, or a power cut loses the instance (shelf does the same)."""
        self._convert(self.disk, self.snapshot)
        for path in (self.snapshot, self.snapshot.parent):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _undefine(self, domain: libvirt.virDomain) -> None:
        domain.undefine()
        self.disk.unlink()

    def _timed(self, step: str, action: Callable[[], object]) -> None:
        started = time.monotonic()
        action()
        self.spent[step] = time.monotonic() - started

    def close(self) -> None:
        try:  # each on its own: a run that failed half-way has only some of them
            with contextlib.suppress(libvirt.libvirtError):
                domain = self.conn.lookupByName(f"shelf-{self.spec.instance_id}")
                if domain.isActive():
                    domain.destroy()
                domain.undefine()
            with contextlib.suppress(libvirt.libvirtError):
                self._dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE)
        finally:
            self.conn.close()
            shutil.rmtree(self.root, ignore_errors=True)
            for path in self.own:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _clean_shutdown(domain: libvirt.virDomain, timeout: float = 60) -> None:
    """ACPI shutdown and wait for the guest to power off (destroy after `timeout`)."""
    deadline = time.monotonic() + timeout
    domain.shutdown()
    while domain.isActive():
        if time.monotonic() > deadline:
            domain.destroy()
            return
        time.sleep(0.2)


def _pool_names() -> frozenset[str]:
    conn = libvirt.open(URI)
    try:
        return frozenset(pool.name() for pool in conn.listAllStoragePools())
    finally:
        conn.close()


def _moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _drop_pools(root: Path, keep: frozenset[str] = frozenset()) -> None:
    """Destroy (and undefine) the pools that serve `root` or a directory in it, but those
    named in `keep` (there before the bench)."""
    conn = libvirt.open(URI)
    try:
        for pool in conn.listAllStoragePools():
            if str(root) in pool.XMLDesc() and pool.name() not in keep:
                persistent = pool.isPersistent()
                if pool.isActive():
                    pool.destroy()
                if persistent:
                    pool.undefine()
    finally:
        conn.close()


STORAGE_STEPS = ("shelve: Snapshot", "shelve: Destroy", "unshelve: Spawn",
                 "unshelve: DeleteImage")
BARE_STORAGE_STEPS = ("Snapshot", "Destroy", "Spawn", "DeleteImage")
STRATEGY: dict[str, str] = {}  # what shelf picked for the data directory, once known


def storage_part(steps: dict[str, float], names: tuple[str, ...]) -> float:
    return sum(steps[name] for name in names)


def shelf_run(image: Path, disk_mb: int, data_dir: Path | None,
              ) -> tuple[float, dict[str, float]]:
    shelf = ShelfSide(image, disk_mb, data_dir)  # it defines shelf-net if libvirtd has none
    try:
        if not STRATEGY:
            STRATEGY["shelf"] = shelf.strategy()
            print(f"storage strategy: {STRATEGY['shelf']}")
        return shelf.cycle(), shelf.step_seconds()
    finally:
        shelf.close()


def bare_run(image: Path, data_dir: Path | None) -> tuple[float, dict[str, float]]:
    bare = BareSide(image, data_dir)
    try:
        return bare.cycle(), bare.spent
    finally:
        bare.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--disk-mb", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3,
                        help="pairs of runs, alternating which side goes first (3)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="shelf's data directory, on the filesystem to measure "
                             "(default: a fresh one under /var/tmp)")
    args = parser.parse_args(argv)
    folder = tmp_dir("shelf-bench-image-")
    ratios: list[float] = []
    storage: list[tuple[float, float]] = []
    STRATEGY.clear()
    pools_before = _pool_names()
    try:
        image = make_image(folder, args.disk_mb)
        where = f", data in {args.data_dir}" if args.data_dir else ""
        print(f"# bench/qemu, {args.disk_mb} MB of data{where}, {machine()}")
        for run in range(args.runs):
            if run % 2 == 0:
                (shelf_seconds, steps), (bare_seconds, bare_steps) = (
                    shelf_run(image, args.disk_mb, args.data_dir),
                    bare_run(image, args.data_dir))
            else:
                (bare_seconds, bare_steps), (shelf_seconds, steps) = (
                    bare_run(image, args.data_dir),
                    shelf_run(image, args.disk_mb, args.data_dir))
            print(f"run {run + 1}")
            for step, seconds in steps.items():
                figure(f"  {step}", seconds, "s")
            figure("shelf shelve+unshelve", shelf_seconds, "s")
            for step, seconds in bare_steps.items():
                figure(f"  bare: {step}", seconds, "s")
            figure("bare shelve+unshelve", bare_seconds, "s")
            ratios.append(shelf_seconds / bare_seconds)
            figure("ratio of this run", ratios[-1])
            storage.append((storage_part(steps, STORAGE_STEPS),
                            storage_part(bare_steps, BARE_STORAGE_STEPS)))
            figure("storage part, shelf", storage[-1][0], "s")
            figure("storage part, bare", storage[-1][1], "s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if args.data_dir is not None:  # the image store's pool, made by the runs
            _drop_pools(args.data_dir, keep=pools_before)
    print(f"strategy {STRATEGY.get('shelf')}: storage part of shelve+unshelve, each side's "
          "median over the runs (Snapshot, Destroy, Spawn, DeleteImage)")
    figure("  shelf", median([shelf for shelf, _ in storage]), "s")
    figure("  bare", median([bare for _, bare in storage]), "s")
    print(f"ratio = {median(ratios):.3f}")  # the median run: disk I/O varies run to run
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
