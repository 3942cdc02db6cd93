"""The host driver's storage strategies on real filesystems and a real libvirtd.

`reflink` on an XFS filesystem made here (a loop-mounted file, `mkfs.xfs -m reflink=1`),
`link` on the machine's ext4 (/var/tmp, which libvirtd reaches). What must hold whatever
the strategy: the image is byte-for-byte the snapshot until it is deleted, the disk made
from it is a file of its own, and deleting one never changes the other. (End-to-end runs
through `shelf`, and `copy` across two filesystems, are in tests/e2e/test_storage.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from adapters.disk_files import DiskFileError, clone_file
from adapters.images import DirectoryImageStore
from adapters.libvirt_host import choose_storage, open_host
from application import lifecycle, queries
from application.bootstrap import Context
from domain.errors import ShelfError
from tests.conftest import node_xml
from tests.integration.test_libvirt_host import (
    SYSTEM_URI,
    RealEnv,
    _clean_up,
    _unavailable,
    assert_pattern,
    spec_for,
)

MiB = 2**20
GiB = 2**30


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def used_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def write_pattern(path: Path, pattern: int, length: str = "64M") -> None:
    subprocess.run(["qemu-io", "-c", f"write -P {pattern:#x} 0 {length}", str(path)],
                   check=True, capture_output=True)


@contextlib.contextmanager
def xfs_with_reflink(base: Path) -> Iterator[Path]:
    if shutil.which("mkfs.xfs") is None or os.geteuid() != 0:
        _unavailable("mkfs.xfs (xfsprogs) and root are needed for a loop-mounted XFS")
    image, mount = base / "xfs.img", base / "xfs"
    subprocess.run(["truncate", "-s", "1G", str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    mount.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def base() -> Iterator[Path]:
    try:
        libvirt.open(SYSTEM_URI).close()
    except libvirt.libvirtError as exc:
        _unavailable(f"no {SYSTEM_URI}: {exc}")
    # Under /var/tmp so that libvirtd (root, its own private /tmp) can reach the files.
    made = Path(tempfile.mkdtemp(prefix="shelf-storage-", dir="/var/tmp"))
    yield made
    shutil.rmtree(made)


@contextlib.contextmanager
def real_env(base: Path, data: Path) -> Iterator[RealEnv]:
    name = f"st-{uuid.uuid4().hex[:8]}"
    images = DirectoryImageStore(data / "images")
    strategy = choose_storage(name, SYSTEM_URI, data, None, images.root, "auto")
    env = RealEnv(open_host(name, SYSTEM_URI, data, storage=strategy), images, base)
    conn = libvirt.open(SYSTEM_URI)
    try:
        yield env
    finally:
        env.host.close()
        _clean_up(conn, env)
        conn.close()


def blank_disk_with_pattern(env: RealEnv, pattern: int) -> tuple[str, Path]:
    spec = env.new_spec(disk_gb=1)
    env.host.create_disk(spec, None)
    disk = env.host.storage.disk_path(spec.instance_id)
    write_pattern(disk, pattern)
    return spec.instance_id, disk


@pytest.mark.e2e
def test_reflink_snapshot_and_spawn_are_independent_clones(base: Path) -> None:
    with xfs_with_reflink(base) as mount, real_env(base, mount / "data") as env:
        host = env.host
        assert host.storage.strategy == "reflink"
        instance_id, disk = blank_disk_with_pattern(env, 0xAB)
        image_id = str(uuid.uuid4())
        image = env.images.path_for(image_id)
        before = used_bytes(mount)
        host.export_disk(instance_id, image)
        assert used_bytes(mount) - before < 8 * MiB  # 64 MiB written, nothing copied
        env.images.commit(image_id, "clone", instance_id)
        assert_pattern(image)
        snapshot = digest(image)

        write_pattern(disk, 0x11)  # the old disk changes: its snapshot does not
        assert digest(image) == snapshot
        spawned = env.new_spec(disk_gb=2)
        before = used_bytes(mount)
        host.create_disk(spawned, image)
        host.create_disk(spawned, image)  # idempotent
        assert used_bytes(mount) - before < 8 * MiB
        new_disk = host.storage.disk_path(spawned.instance_id)
        assert_pattern(new_disk)
        info = subprocess.run(["qemu-img", "info", "-U", str(new_disk)], check=True,
                              capture_output=True, text=True).stdout
        assert "virtual size: 2 GiB" in info  # grown to the flavor's disk
        write_pattern(new_disk, 0x22)
        host.delete_disk(instance_id)
        assert digest(image) == snapshot
        env.images.delete(image_id)
        assert_pattern_of(new_disk, 0x22)
        host.delete_disk(spawned.instance_id)
        assert sorted(p.name for p in host.disks_dir.iterdir()) == []


def assert_pattern_of(path: Path, pattern: int) -> None:
    done = subprocess.run(["qemu-io", "-r", "-U", "-c", f"read -P {pattern:#x} 0 64M",
                           str(path)], capture_output=True, text=True, check=True)
    assert "Pattern verification failed" not in done.stdout


@pytest.mark.e2e
def test_link_snapshot_never_runs_as_the_disk(base: Path) -> None:
    with real_env(base, base / "data") as env:
        host = env.host
        assert host.storage.strategy == "link"
        instance_id, disk = blank_disk_with_pattern(env, 0xAB)
        spec = spec_for(instance_id, disk_gb=1, mac=env.macs[-1], name=f"vm-{instance_id}")
        image_id = str(uuid.uuid4())
        image = env.images.path_for(image_id)
        host.export_disk(instance_id, image)
        env.images.commit(image_id, "link", instance_id)
        assert image.stat().st_ino == disk.stat().st_ino  # shelved: one file, two names
        snapshot, inode = digest(image), image.stat().st_ino

        host.define_and_start(spec)  # unshelve in place: the guest may write its disk
        assert disk.stat().st_ino != inode and image.stat().st_ino == inode
        assert image.stat().st_nlink == 1
        host.power_off(instance_id, clean_timeout=0, retry_interval=0)
        write_pattern(disk, 0x11)
        assert digest(image) == snapshot

        host.export_disk(instance_id, image)  # shelved again (the same path, after a crash)
        assert image.stat().st_ino == disk.stat().st_ino
        host.create_disk(spec_for(instance_id, disk_gb=2), None)  # a resize writes too
        assert image.stat().st_ino != disk.stat().st_ino
        host.undefine(instance_id)
        host.delete_disk(instance_id)
        assert image.is_file()
        assert_pattern_of(image, 0x11)


@pytest.mark.e2e
def test_delete_disk_removes_what_an_interrupted_clone_left(base: Path) -> None:
    with xfs_with_reflink(base) as mount, real_env(base, mount / "data") as env:
        instance_id, _disk = blank_disk_with_pattern(env, 0xAB)
        env.host.ensure_ready()
        partial = env.host.disks_dir / f".{instance_id}.qcow2.cloning"
        partial.write_bytes(b"part of a clone")
        other = env.host.disks_dir / ".someone-elses.qcow2.cloning"
        other.write_bytes(b"not ours")
        env.host.delete_disk(instance_id)
        assert not partial.exists() and other.exists()
        other.unlink()


# --- choosing and recording the strategy (no libvirtd needed) ------------------------------

def test_test_driver_hosts_and_forced_copy_record_copy(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    h.add_host("h1")
    node = node_xml(h.tmp / "h2.xml")
    h.ok("host", "add", "h2", "--uri", f"test://{node}", "--storage", "copy")
    rows = {row["name"]: row for row in h.ok("host", "list", "--json").json()}
    assert {name: row["storage"] for name, row in rows.items()} == {"h1": "copy", "h2": "copy"}
    assert "STORAGE" in h.ok("host", "list").out.splitlines()[0]
    bad = h.shelf("host", "add", "h3", "--uri", f"test://{node}", "--storage", "reflink")
    assert bad.code == 2 and len(bad.err.splitlines()) == 1


def test_auto_tries_the_host_disks_directory_against_the_image_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    auto = choose_storage("h1", SYSTEM_URI, data, None, data / "images", "auto")
    assert auto == "link"  # tmp_path is on the machine's ext4
    assert (data / "hosts" / "h1" / "disks").is_dir() and (data / "images").is_dir()
    assert choose_storage("h1", SYSTEM_URI, data, None, data / "images", "copy") == "copy"
    test_uri = f"test://{node_xml(tmp_path / 'n.xml')}"
    assert choose_storage("h2", test_uri, data, None, data / "images", "auto") == "copy"
    assert not (data / "hosts" / "h2").exists()  # the test driver has no disk files
    driver = open_host("h2", test_uri, data, storage="reflink")
    try:
        assert driver.storage.strategy == "copy"  # whatever it is told: it copies
    finally:
        driver.close()


@contextlib.contextmanager
def bind_mount(source: Path, target: Path, *, read_only: bool = False) -> Iterator[Path]:
    """source mounted again at target: the same filesystem (same st_dev), another mount."""
    if os.geteuid() != 0:
        _unavailable("root is needed for a bind mount")
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_an_image_store_bound_from_the_same_filesystem_is_copy(tmp_path: Path) -> None:
    """A bind mount shares st_dev with its source, but link(2) and FICLONE across mounts
    fail (EXDEV): only copying works, so the host is recorded copy, not link."""
    data, elsewhere = tmp_path / "data", tmp_path / "images-elsewhere"
    elsewhere.mkdir()
    with bind_mount(elsewhere, data / "images") as images:
        assert images.stat().st_dev == (tmp_path / "data").stat().st_dev
        assert choose_storage("h1", SYSTEM_URI, data, None, images, "auto") == "copy"
        assert list(images.iterdir()) == []
    assert list((data / "hosts" / "h1" / "disks").iterdir()) == []  # probes removed


def test_a_probe_refused_for_another_reason_fails_in_one_line(tmp_path: Path) -> None:
    """A read-only image store (EROFS) is no "reflink not supported": nothing is recorded."""
    data, elsewhere = tmp_path / "data", tmp_path / "images-elsewhere"
    (data / "hosts").mkdir(parents=True)
    elsewhere.mkdir()
    with (bind_mount(elsewhere, data / "images", read_only=True) as images,
          pytest.raises(DiskFileError, match="Read-only file system") as raised):
        choose_storage("h1", SYSTEM_URI, data, None, images, "auto")
    assert len(str(raised.value).splitlines()) == 1
    assert list((data / "hosts" / "h1" / "disks").iterdir()) == []


def test_host_add_turns_a_refused_probe_into_a_failed_operation(
    store_url: str, tmp_path: Path
) -> None:
    """What `host add` makes of it (after the capacity, before anything is recorded): an
    operation failure, exit 1, one line naming the host."""
    data, elsewhere = tmp_path / "data", tmp_path / "images-elsewhere"
    elsewhere.mkdir()
    ctx = Context(store_url, data)
    try:
        with (bind_mount(elsewhere, data / "images", read_only=True),
              pytest.raises(ShelfError) as raised):
            lifecycle._storage(ctx, "h1", SYSTEM_URI, "auto")
    finally:
        ctx.close()
    assert raised.value.exit_code == 1
    message = str(raised.value)
    assert message.startswith("host h1: try its storage: clone a probe file from ")
    assert message.endswith(": Read-only file system") and "\n" not in message


def test_a_clone_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    with xfs_with_reflink(tmp_path) as mount:
        source = mount / "disk.qcow2"
        source.write_bytes(b"disk" * 1024)
        source.chmod(0o644)
        old = os.umask(0o022)
        try:
            clone_file(source, mount / "image.img")
        finally:
            os.umask(old)
        assert oct((mount / "image.img").stat().st_mode & 0o777) == "0o600"
        assert (mount / "image.img").read_bytes() == source.read_bytes()


def test_host_usage_tables_of_an_older_shelf_are_replayed(store_url: str, tmp_path: Path) -> None:
    """Tables made before hosts had a storage strategy lack its column: made anew."""
    ctx = Context(store_url, tmp_path / "data")
    try:
        ctx.service.add_host("h1", "test:///default", 8, 8192, 100, "op", "req-h")
        ctx.catch_up()
        for table in ("host_usage", "host_usage_history"):
            ctx.db.execute(f"ALTER TABLE {table} DROP COLUMN storage")
    finally:
        ctx.close()
    later = Context(store_url, tmp_path / "data")  # a newer shelf's first command
    try:
        assert [(h["name"], h["storage"]) for h in queries.list_hosts(later)] == [("h1", "copy")]
    finally:
        later.close()
