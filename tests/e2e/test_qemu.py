"""End to end on a real libvirtd with qemu:///system: real qcow2 disks, real guests (KVM
when /dev/kvm is usable, else TCG), and `shelf serve` as a real process, killed for real
by the `crash` failpoint (exit 137, as kill -9)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from bench.loopfs import data_dir_layout, missing_tools
from tests.crash.test_crash_matrix import SHELVE_EVENTS, UNSHELVE_OFFLOADED_EVENTS
from tests.e2e.cleanup import remove_test_artifacts

pytestmark = pytest.mark.e2e

SHELF = str(Path(sys.executable).parent / "shelf")
PATTERN_A = ("0xab", 0)  # written into the image before boot
PATTERN_B = ("0xcd", 4 * 1024 * 1024)  # written into the instance's own disk
MIB = 1024 * 1024


def _require_libvirtd() -> None:
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"qemu:///system is required under CI=true: {error}")
        pytest.skip(f"no libvirtd: {error}")


class Cloud:
    """One qemu:///system host under a unique name, a store, and `shelf serve` processes."""

    def __init__(self, store: str, root: Path) -> None:
        self.store, self.root = store, root
        self.host = f"e2e-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "SHELF_STORE": store, "SHELF_DATA_DIR": str(root / "data"),
                    "SHELF_LOG_LEVEL": "warning"}
        self.serve_proc: subprocess.Popen[bytes] | None = None

    def shelf(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([SHELF, *argv], env=self.env, capture_output=True, text=True,
                                timeout=300)
        if check:
            assert result.returncode == 0, f"shelf {' '.join(argv)}: {result.stderr}"
        return result

    def show(self, ref: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.shelf("show", ref, "--json").stdout)
        return data

    def serve(
        self, failpoints: str = "",
        options: tuple[str, ...] = ("--shutdown-timeout", "3", "--shutdown-retry-interval", "1"),
    ) -> subprocess.Popen[bytes]:
        env = {**self.env, "SHELF_FAILPOINTS": failpoints}
        with open(self.root / "serve.log", "ab") as log:  # the child keeps its own copy
            self.serve_proc = subprocess.Popen(
                [SHELF, "serve", *options], env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        return self.serve_proc

    def stop_serving(self) -> None:
        if self.serve_proc is not None and self.serve_proc.poll() is None:
            self.serve_proc.terminate()
            self.serve_proc.wait(timeout=60)

    def disk_of(self, instance_id: str) -> Path:
        """In the store's own pool directory, `disks-<the store's tag>`."""
        [pool_dir] = (self.root / "data" / "hosts" / self.host).glob("disks-*")
        return pool_dir / f"{instance_id}.qcow2"

    def image_file(self, image_id: str) -> Path:
        return self.root / "data" / "images" / f"{image_id}.img"


def qemu_io(path: Path, command: str, readonly: bool = False) -> str:
    args = ["qemu-io", *(["-r", "-U"] if readonly else []), "-c", command, str(path)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def assert_pattern(path: Path, pattern: tuple[str, int]) -> None:
    value, offset = pattern
    output = qemu_io(path, f"read -P {value} {offset} 1M", readonly=True)
    assert "Pattern verification failed" not in output, output


def shelf_domains() -> set[str]:
    conn = libvirt.open("qemu:///system")
    try:
        return {d.name()[len("shelf-"):] for d in conn.listAllDomains()
                if d.name().startswith("shelf-")}
    finally:
        conn.close()


@pytest.fixture
def cloud(store_url: str) -> Iterator[Cloud]:
    with cloud_on(store_url) as made:
        yield made


@contextlib.contextmanager
def cloud_on(store: str, layout: str | None = None, fs_mb: int = 512) -> Iterator[Cloud]:
    """A Cloud with its host and the `base` image; its data directory on the machine's own
    filesystem, or on loop filesystems of its own laid out for a storage strategy
    (bench/loopfs.py). Whatever happens, it leaves nothing behind: `serve`, domains, DHCP
    entries and pools go first (no qemu keeps a disk open, no pool points into a mount
    that is gone), then the mounts and their loop devices, then the files."""
    _require_libvirtd()
    if layout is not None and (missing := missing_tools()):
        _require(f"{', '.join(missing)} (scripts/install-system.sh installs them)")
    root = Path(f"/var/tmp/shelf-e2e-{uuid.uuid4().hex[:8]}")
    root.mkdir(parents=True)
    try:
        with contextlib.ExitStack() as mounts:
            if layout is not None:
                mounts.enter_context(data_dir_layout(layout, root, root / "data", fs_mb))
            made = Cloud(store, root)
            try:
                made.shelf("host", "add", made.host, "--uri", "qemu:///system", "--vcpus",
                           "4", "--memory-mb", "2048", "--disk-gb", "20")
                base = root / "base.qcow2"
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"],
                               check=True)
                qemu_io(base, f"write -P {PATTERN_A[0]} {PATTERN_A[1]} 1M")
                made.shelf("image", "import", "base", str(base))
                yield made
            finally:
                _release(made)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _require(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"missing: {what}")


def _clean_up(cloud: Cloud) -> None:
    """Leave libvirtd as it was (see _release), and remove the test's directory."""
    _release(cloud)
    shutil.rmtree(cloud.root, ignore_errors=True)


def _release(cloud: Cloud) -> None:
    """Leave libvirtd as it was: no domain, DHCP entry or pool of this test remains."""
    cloud.stop_serving()
    listing = cloud.shelf("list", "--json", check=False)
    try:
        macs = [row["mac"] for row in json.loads(listing.stdout or "[]")]
    except ValueError:  # the store itself is broken: the domains still name their MACs
        macs = []
    remove_test_artifacts(cloud.root, macs)


def boot_stop_and_write(cloud: Cloud, *extra: str) -> str:
    instance_id = cloud.shelf("boot", "vm1", "--host", cloud.host, "--vcpus", "1",
                              "--memory-mb", "64", "--disk-gb", "1", "--image", "base",
                              *extra, "--wait").stdout.strip()
    assert cloud.show("vm1")["power_state"] == "running"
    cloud.shelf("stop", "vm1", "--wait")
    return instance_id


def test_data_survives_shelve_offload_unshelve(cloud: Cloud) -> None:
    cloud.serve()
    instance_id = boot_stop_and_write(cloud)
    disk = cloud.disk_of(instance_id)
    qemu_io(disk, f"write -P {PATTERN_B[0]} {PATTERN_B[1]} 1M")

    cloud.shelf("shelve", "vm1", "--wait")  # offload at once (the default)
    vm = cloud.show("vm1")
    assert vm["vm_state"] == "shelved_offloaded"
    assert not disk.exists() and instance_id not in shelf_domains()
    image = cloud.image_file(vm["shelved_image_id"])
    assert image.exists()

    cloud.shelf("unshelve", "vm1", "--wait")
    vm = cloud.show("vm1")
    assert (vm["vm_state"], vm["power_state"]) == ("active", "running")
    assert disk.exists()  # a new disk, made from the image
    assert_pattern(disk, PATTERN_A)
    assert_pattern(disk, PATTERN_B)
    assert not image.exists()
    assert shelf_domains() & {instance_id} == {instance_id}
    result = cloud.shelf("reconcile", check=False)
    assert result.returncode == 0, result.stdout


def test_volume_backed_unshelve_reattaches_the_same_volume(cloud: Cloud) -> None:
    cloud.serve()
    instance_id = boot_stop_and_write(cloud, "--volume-backed")
    volume = cloud.root / "data" / "volumes" / f"{instance_id}.qcow2"
    qemu_io(volume, f"write -P {PATTERN_B[0]} {PATTERN_B[1]} 1M")
    cloud.shelf("shelve", "vm1", "--wait")
    assert cloud.show("vm1")["vm_state"] == "shelved_offloaded"
    images = json.loads(cloud.shelf("image", "list", "--json").stdout)
    assert [image["name"] for image in images] == ["base"]  # no snapshot was taken
    cloud.shelf("unshelve", "vm1", "--wait")
    assert cloud.show("vm1")["power_state"] == "running"
    assert_pattern(volume, PATTERN_A)
    assert_pattern(volume, PATTERN_B)


KILLED_CASES = [
    ("after:Snapshot", "shelve", SHELVE_EVENTS, "shelved_offloaded"),
    ("before:Destroy", "shelve", SHELVE_EVENTS, "shelved_offloaded"),
    ("after:Spawn", "unshelve", UNSHELVE_OFFLOADED_EVENTS, "active"),
]


@pytest.mark.parametrize(("failpoint", "request_name", "expected", "final"), KILLED_CASES)
def test_serve_killed_for_real_resumes(
    cloud: Cloud, failpoint: str, request_name: str, expected: list[str], final: str
) -> None:
    killed_for_real_resumes(cloud, failpoint, request_name, expected, final)


@pytest.fixture
def reflink_cloud(tmp_path: Path) -> Iterator[Cloud]:
    """The data directory on an XFS (reflink=1) of the test's own; one store kind is
    enough here (the store's part is the same under every strategy)."""
    with cloud_on(f"sqlite:///{tmp_path / 'shelf.db'}", "reflink") as made:
        yield made


@pytest.mark.parametrize(("failpoint", "request_name", "expected", "final"), KILLED_CASES)
def test_serve_killed_for_real_resumes_under_reflink(
    reflink_cloud: Cloud, failpoint: str, request_name: str, expected: list[str], final: str
) -> None:
    """The same subset of the crash matrix where snapshots and spawns are clones."""
    [host] = json.loads(reflink_cloud.shelf("host", "list", "--json").stdout)
    assert host["storage"] == "reflink"
    killed_for_real_resumes(reflink_cloud, failpoint, request_name, expected, final)


def killed_for_real_resumes(
    cloud: Cloud, failpoint: str, request_name: str, expected: list[str], final: str
) -> None:
    cloud.serve()
    instance_id = boot_stop_and_write(cloud)
    qemu_io(cloud.disk_of(instance_id), f"write -P {PATTERN_B[0]} {PATTERN_B[1]} 1M")
    if request_name == "unshelve":
        cloud.shelf("shelve", "vm1", "--wait")
    cloud.stop_serving()

    killed = cloud.serve(f"{failpoint}=crash")
    cloud.shelf(request_name, "vm1")
    status = killed.wait(timeout=120)
    assert status == 137, (cloud.root / "serve.log").read_text()[-3000:]  # as if kill -9
    assert cloud.show("vm1")["task_state"] is not None

    cloud.serve()  # restarted, no failpoints, no operator action
    _wait_idle(cloud)
    vm = cloud.show("vm1")
    assert (vm["vm_state"], vm["fault"]) == (final, None)
    history = json.loads(cloud.shelf("history", "vm1", "--json").stdout)
    last_request = history[-1]["request_id"]
    assert [r["event"] for r in history if r["request_id"] == last_request] == expected
    shelved_images = [i for i in json.loads(cloud.shelf("image", "list", "--json").stdout)
                      if i["name"] == "vm1-shelved"]
    assert len(shelved_images) == (1 if final == "shelved_offloaded" else 0)
    if final == "active":
        assert_pattern(cloud.disk_of(instance_id), PATTERN_A)
        assert_pattern(cloud.disk_of(instance_id), PATTERN_B)
    else:  # the snapshot holds what the disk held
        assert_pattern(cloud.image_file(vm["shelved_image_id"]), PATTERN_A)
        assert_pattern(cloud.image_file(vm["shelved_image_id"]), PATTERN_B)
    result = cloud.shelf("reconcile", check=False)
    assert result.returncode == 0, result.stdout


def _wait_idle(cloud: Cloud, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while cloud.show("vm1")["task_state"] is not None:
        assert time.monotonic() < deadline, "the restarted worker did not finish"
        time.sleep(0.3)
