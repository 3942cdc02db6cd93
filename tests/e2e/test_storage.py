"""Each storage strategy end to end on qemu:///system (issue 19): the data directory on
loop filesystems of the test's own (bench/loopfs.py) — XFS with reflink (`reflink`), ext4
(`link`), and the image store on a second filesystem (`copy`) — and real qemu guests
(blank disks sitting in the BIOS: enough to move disks around, see field-notes.md).

Whatever the strategy, the semantics stay: an image is byte for byte what it was until it
is deleted (checked by hash), data written into a disk before shelve is on the disk after
unshelve on another host, a failed spawn leaves the image as it was, an unshelve in place
leaves no image behind, and a delete removes only what belongs to its instance."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.guest_image import (
    BOOT_LINE,
    BOUND_LINE,
    MEMORY_MB,
    GuestImages,
    boot_count,
    console_text,
    wait_for_console,
)
from bench.loopfs import LAYOUTS
from tests.e2e.test_qemu import PATTERN_A, PATTERN_B, Cloud, assert_pattern, cloud_on, qemu_io

pytestmark = pytest.mark.e2e

PATTERN_C = ("0x3c", 8 * 1024 * 1024)  # the second instance's own data
SERVE_OPTIONS = ("--shutdown-timeout", "3", "--shutdown-retry-interval", "1")
KEEP_SHELVED = ("--shelved-offload-time", "-1")


class StorageCloud:
    """A Cloud (its host A and the `base` image) with a second host B on the same libvirtd."""

    def __init__(self, cloud: Cloud, layout: str) -> None:
        self.cloud, self.layout = cloud, layout
        self.data = cloud.root / "data"
        self.host_a, self.host_b = cloud.host, f"{cloud.host}-b"
        cloud.shelf("host", "add", self.host_b, "--uri", "qemu:///system", "--vcpus", "4",
                    "--memory-mb", "2048", "--disk-gb", "20")

    def disk(self, host: str, instance_id: str) -> Path:
        """The instance's disk on `host`, in the store's own pool directory (it may not
        exist)."""
        [pool_dir] = (self.data / "hosts" / host).glob("disks-*")
        return pool_dir / f"{instance_id}.qcow2"

    def image_of(self, name: str) -> Path:
        [image] = [i for i in json.loads(self.cloud.shelf("image", "list", "--json").stdout)
                   if i["name"] == name]
        return self.cloud.image_file(image["id"])

    def image_names(self) -> list[str]:
        return sorted(i["name"] for i in
                      json.loads(self.cloud.shelf("image", "list", "--json").stdout))

    def boot_stopped(self, name: str, pattern: tuple[str, int]) -> str:
        """An instance booted on host A from `base`, powered off, `pattern` written into its
        disk."""
        instance_id = self.cloud.shelf(
            "boot", name, "--host", self.host_a, "--vcpus", "1", "--memory-mb", "64",
            "--disk-gb", "1", "--image", "base", "--wait").stdout.strip()
        self.cloud.shelf("stop", name, "--wait")
        qemu_io(self.disk(self.host_a, instance_id), f"write -P {pattern[0]} {pattern[1]} 1M")
        return instance_id

    def strategies(self) -> dict[str, str]:
        rows = json.loads(self.cloud.shelf("host", "list", "--json").stdout)
        return {row["name"]: row["storage"] for row in rows}

    def restart_serving(self, failpoints: str = "", *options: str) -> None:
        self.cloud.stop_serving()
        self.cloud.serve(failpoints, (*SERVE_OPTIONS, *options))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def shares_extents(path: Path) -> bool:
    """Whether the filesystem says some of the file's extents are shared (a reflink clone's
    are), read with FIEMAP through e2fsprogs' filefrag (-s syncs the file first)."""
    done = subprocess.run(["filefrag", "-s", "-v", str(path)], capture_output=True, text=True,
                          check=True)
    return "shared" in done.stdout


@pytest.fixture(params=LAYOUTS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageCloud]:
    """One store kind (SQLite) is enough: the store's part is the same under every
    strategy, and tests/e2e/test_qemu.py runs both stores."""
    with cloud_on(f"sqlite:///{tmp_path / 'shelf.db'}", request.param) as cloud:
        yield StorageCloud(cloud, request.param)


def test_host_list_shows_the_strategy_the_layout_allows(storage: StorageCloud) -> None:
    expected = storage.layout  # each layout is named after the strategy it allows
    assert storage.strategies() == {storage.host_a: expected, storage.host_b: expected}


def test_shelve_then_unshelve_on_another_host_after_a_failed_spawn(
    storage: StorageCloud,
) -> None:
    cloud = storage.cloud
    base = storage.image_of("base")
    base_hash = sha256(base)
    storage.restart_serving()
    instance_id = storage.boot_stopped("vm1", PATTERN_B)
    disk_a = storage.disk(storage.host_a, instance_id)

    cloud.shelf("shelve", "vm1", "--wait")  # and offload, at once
    vm = cloud.show("vm1")
    assert vm["vm_state"] == "shelved_offloaded" and not disk_a.exists()
    image = cloud.image_file(vm["shelved_image_id"])
    assert os.stat(image).st_nlink == 1  # the disk is gone: nothing else can write it
    image_hash = sha256(image)
    assert_pattern(image, PATTERN_A)
    assert_pattern(image, PATTERN_B)
    assert shares_extents(image) == (storage.layout == "reflink")  # a clone of a clone of base

    storage.restart_serving("after:Spawn=error")  # the guest was started, then it fails
    failed = cloud.shelf("unshelve", "vm1", "--host", storage.host_b, "--wait", check=False)
    assert failed.returncode == 1, failed.stdout
    vm = cloud.show("vm1")
    assert (vm["vm_state"], vm["task_state"]) == ("shelved_offloaded", None)
    assert not storage.disk(storage.host_b, instance_id).exists()  # rolled back
    assert sha256(image) == image_hash

    storage.restart_serving()
    cloud.shelf("unshelve", "vm1", "--host", storage.host_b, "--wait")
    vm = cloud.show("vm1")
    assert (vm["vm_state"], vm["power_state"], vm["host"]) == ("active", "running",
                                                              storage.host_b)
    disk_b = storage.disk(storage.host_b, instance_id)
    assert_pattern(disk_b, PATTERN_A)
    assert_pattern(disk_b, PATTERN_B)
    assert os.stat(disk_b).st_nlink == 1  # an independent file
    assert not image.exists() and storage.image_names() == ["base"]
    assert sha256(base) == base_hash
    result = cloud.shelf("reconcile", check=False)
    assert result.returncode == 0, result.stdout


def test_unshelve_in_place_leaves_no_image_behind(storage: StorageCloud) -> None:
    cloud = storage.cloud
    base_hash = sha256(storage.image_of("base"))
    storage.restart_serving("", *KEEP_SHELVED)  # shelved, not offloaded
    instance_id = storage.boot_stopped("vm1", PATTERN_B)
    cloud.shelf("shelve", "vm1", "--wait")
    vm = cloud.show("vm1")
    assert vm["vm_state"] == "shelved"
    image = cloud.image_file(vm["shelved_image_id"])
    assert_pattern(image, PATTERN_B)

    cloud.shelf("unshelve", "vm1", "--wait")
    vm = cloud.show("vm1")
    assert (vm["vm_state"], vm["power_state"], vm["host"]) == ("active", "running",
                                                              storage.host_a)
    disk = storage.disk(storage.host_a, instance_id)
    assert_pattern(disk, PATTERN_B)
    assert not image.exists() and storage.image_names() == ["base"]
    assert [p.name for p in image.parent.iterdir() if p.name.startswith(image.stem)] == []
    assert os.stat(disk).st_nlink == 1
    assert sha256(storage.image_of("base")) == base_hash


def test_delete_of_a_shelved_instance_removes_only_its_own_files(
    storage: StorageCloud,
) -> None:
    cloud = storage.cloud
    storage.restart_serving()
    first = storage.boot_stopped("vm1", PATTERN_B)
    second = storage.boot_stopped("vm2", PATTERN_C)
    cloud.shelf("shelve", "vm1", "--wait")
    cloud.shelf("shelve", "vm2", "--wait")
    first_image, second_image = storage.image_of("vm1-shelved"), storage.image_of("vm2-shelved")
    disks_dir = storage.disk(storage.host_a, first).parent
    foreign = _foreign_files(first_image, disks_dir)
    kept = [second_image, storage.image_of("base"), *foreign]
    hashes = {path: sha256(path) for path in kept}

    cloud.shelf("delete", "vm1", "--wait")
    assert not first_image.exists() and not storage.disk(storage.host_a, first).exists()
    assert {path: sha256(path) for path in kept} == hashes
    assert storage.image_names() == ["base", "vm2-shelved"]

    cloud.shelf("unshelve", "vm2", "--host", storage.host_a, "--wait")  # it is whole
    disk = storage.disk(storage.host_a, second)
    assert_pattern(disk, PATTERN_A)
    assert_pattern(disk, PATTERN_C)
    assert {path: sha256(path) for path in foreign} == {p: hashes[p] for p in foreign}


def _foreign_files(image: Path, disks_dir: Path) -> list[Path]:
    """Files shelf did not make, beside its own: a clone (where the filesystem can) of an
    image in the image store, and a disk-like file in the host's disks directory."""
    clone = image.parent / "operator-copy.img"
    subprocess.run(["cp", "--reflink=auto", str(image), str(clone)], check=True)
    stray = disks_dir / "operator-disk.qcow2"
    shutil.copy(image, stray)
    return [clone, stray]


def test_storage_copy_is_kept_on_a_filesystem_that_could_clone(tmp_path: Path) -> None:
    """`--storage copy` forces the safe path: the host says so, and its snapshot shares
    no extent with anything."""
    with cloud_on(f"sqlite:///{tmp_path / 'shelf.db'}", "reflink") as cloud:
        forced = f"{cloud.host}-copy"
        cloud.shelf("host", "add", forced, "--uri", "qemu:///system", "--vcpus", "4",
                    "--memory-mb", "2048", "--disk-gb", "20", "--storage", "copy")
        rows: list[dict[str, Any]] = json.loads(cloud.shelf("host", "list", "--json").stdout)
        assert {row["name"]: row["storage"] for row in rows} == {cloud.host: "reflink",
                                                                 forced: "copy"}
        cloud.serve()
        cloud.shelf("boot", "vm1", "--host", forced, "--vcpus", "1", "--memory-mb", "64",
                    "--disk-gb", "1", "--image", "base", "--wait")
        cloud.shelf("stop", "vm1", "--wait")
        cloud.shelf("shelve", "vm1", "--wait")
        image = cloud.image_file(cloud.show("vm1")["shelved_image_id"])
        assert_pattern(image, PATTERN_A)
        assert not shares_extents(image)


def test_a_guest_running_again_on_its_shelved_disk_leaves_the_image_as_it_was(
    storage: StorageCloud, guest: GuestImages,
) -> None:
    """The real guest (it counts its boots on its root filesystem) shelved in place, then
    an unshelve in place that fails after PowerOn: the guest boots again and writes its
    disk, while the image must stay the snapshot (a hard link to that disk would not)."""
    cloud = storage.cloud
    tcg = f"{cloud.host}-tcg"  # this machine's /dev/kvm can't run a stock kernel
    cloud.shelf("host", "add", tcg, "--uri", "qemu:///system", "--virt-type", "qemu",
                "--vcpus", "2", "--memory-mb", "1024", "--disk-gb", "5")
    cloud.shelf("image", "import", "guest", str(guest.listens))
    cloud.serve(options=KEEP_SHELVED)
    instance_id = cloud.shelf("boot", "vm1", "--host", tcg, "--vcpus", "1", "--memory-mb",
                              str(MEMORY_MB), "--disk-gb", "1", "--image", "guest",
                              "--wait").stdout.strip()
    console = storage.data / "hosts" / tcg / "console" / f"{instance_id}.log"
    wait_for_console(console, BOUND_LINE)
    cloud.shelf("shelve", "vm1", "--wait")  # a clean shutdown: boot 1 is on the disk
    image = cloud.image_file(cloud.show("vm1")["shelved_image_id"])
    image_hash = sha256(image)
    assert boot_count(image) == 1

    storage.restart_serving("after:PowerOn=error", *KEEP_SHELVED)
    seen = len(console_text(console))
    assert cloud.shelf("unshelve", "vm1", "--wait", check=False).returncode == 1
    assert wait_for_console(console, BOOT_LINE, seen) == "2"  # it runs, and wrote its disk
    wait_for_console(console, BOUND_LINE, seen)
    assert cloud.show("vm1")["vm_state"] == "shelved"
    assert sha256(image) == image_hash

    storage.restart_serving("", *KEEP_SHELVED)
    cloud.shelf("unshelve", "vm1", "--wait")
    assert cloud.show("vm1")["vm_state"] == "active" and not image.exists()
