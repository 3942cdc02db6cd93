"""Storage strategy detection and the clone, link and copy of disk files, on real files.

The machine's root (and so tmp_path) is ext4: hard links, no reflink. /dev/shm is another
filesystem (tmpfs). Clones on XFS are tested in tests/integration/test_storage_strategies.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import disk_files
from adapters.disk_files import COPY, LINK, DiskFileError
from adapters.images import DirectoryImageStore
from adapters.libvirt_host import choose_storage, is_local


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qcow2(path: Path, *options: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), "16M"],
                   check=True)
    return path


@pytest.fixture
def other_filesystem() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="shelf-test-", dir="/dev/shm"))
    yield directory
    shutil.rmtree(directory)


def test_one_filesystem_without_reflink_is_link(tmp_path: Path) -> None:
    disks, images = tmp_path / "disks", tmp_path / "images"
    disks.mkdir()
    images.mkdir()
    assert disk_files.detect_strategy(disks, images) == LINK
    assert list(disks.iterdir()) == [] and list(images.iterdir()) == []  # probe removed


def test_another_filesystem_is_copy(tmp_path: Path, other_filesystem: Path) -> None:
    assert tmp_path.stat().st_dev != other_filesystem.stat().st_dev
    assert disk_files.detect_strategy(tmp_path, other_filesystem) == COPY
    assert list(other_filesystem.iterdir()) == []


def test_a_refused_clone_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "a"
    source.write_bytes(b"data")
    with pytest.raises(DiskFileError, match="clone"):
        disk_files.clone_file(source, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_broken_link_leaves_the_other_name_untouched(tmp_path: Path) -> None:
    disk, image = tmp_path / "disk.qcow2", tmp_path / "image.img"
    disk.write_bytes(b"snapshot" * 1000)
    disk.chmod(0o600)
    disk_files.link_file(disk, image)
    assert disk.stat().st_ino == image.stat().st_ino
    before, inode = digest(image), image.stat().st_ino
    assert disk_files.break_link(disk)
    assert disk.stat().st_ino != inode and image.stat().st_ino == inode
    assert disk.stat().st_nlink == image.stat().st_nlink == 1
    assert oct(disk.stat().st_mode & 0o777) == "0o600"  # the disk keeps its mode
    with disk.open("r+b") as file:  # the running guest writes its disk
        file.write(b"changed!")
    assert digest(image) == before
    assert not disk_files.break_link(disk)  # its own file already: nothing to do
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.qcow2", "image.img"]


def test_a_break_interrupted_by_a_crash_is_done_again_whole(tmp_path: Path) -> None:
    disk, image = tmp_path / "disk.qcow2", tmp_path / "image.img"
    disk.write_bytes(b"snapshot" * 1000)
    disk_files.link_file(disk, image)
    partial = disk_files.leftover_of_break(disk)
    partial.write_bytes(b"snap")  # the copy a crash cut short, never renamed
    assert disk_files.break_link(disk)
    assert disk.read_bytes() == image.read_bytes() and not partial.exists()
    assert disk.stat().st_ino != image.stat().st_ino


def test_link_again_replaces_a_partial_destination(tmp_path: Path) -> None:
    disk, image = tmp_path / "disk", tmp_path / "image"
    disk.write_bytes(b"whole")
    image.write_bytes(b"part")  # a crash left it
    disk_files.link_file(disk, image)
    assert image.read_bytes() == b"whole" and image.stat().st_ino == disk.stat().st_ino


def test_a_copy_keeps_holes(tmp_path: Path) -> None:
    source = tmp_path / "sparse"
    with source.open("wb") as file:
        file.truncate(64 * 2**20)
        file.write(b"x")
    disk_files.copy_file(source, tmp_path / "copy")
    copy = tmp_path / "copy"
    assert copy.stat().st_size == source.stat().st_size and digest(copy) == digest(source)
    assert copy.stat().st_blocks * 512 < 2**20


def test_only_a_qcow2_needing_no_other_file_is_standalone(tmp_path: Path) -> None:
    base = qcow2(tmp_path / "base.qcow2")
    assert disk_files.standalone_qcow2(base)
    overlay = qcow2(tmp_path / "overlay.qcow2", "-b", str(base), "-F", "qcow2")
    assert not disk_files.standalone_qcow2(overlay)
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(4096))
    assert not disk_files.standalone_qcow2(raw)
    with pytest.raises(DiskFileError, match="qemu-img info"):
        disk_files.standalone_qcow2(tmp_path / "missing")


def test_flatten_writes_a_standalone_copy_of_an_overlay(tmp_path: Path) -> None:
    base = qcow2(tmp_path / "base.qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0xcd 0 64k", str(base)], check=True,
                   capture_output=True)
    overlay = qcow2(tmp_path / "overlay.qcow2", "-b", str(base), "-F", "qcow2")
    flat = tmp_path / "flat.qcow2"
    flat.write_bytes(b"partial")  # a crash's leftover is replaced
    disk_files.flatten(overlay, flat)
    assert disk_files.standalone_qcow2(flat)
    done = subprocess.run(["qemu-io", "-r", "-c", "read -P 0xcd 0 64k", str(flat)],
                          capture_output=True, text=True, check=True)
    assert "Pattern verification failed" not in done.stdout
    os.unlink(base)
    assert disk_files.standalone_qcow2(flat)  # it needs the base no more


def test_a_flattened_snapshot_is_private_whatever_the_umask(tmp_path: Path) -> None:
    disk = qcow2(tmp_path / "disk.qcow2")
    old = os.umask(0o022)
    try:
        disk_files.flatten(disk, tmp_path / "image.img")
    finally:
        os.umask(old)
    assert oct((tmp_path / "image.img").stat().st_mode & 0o777) == "0o600"


def test_a_flatten_bypasses_the_page_cache_only_where_the_filesystem_allows_it(
    tmp_path: Path,
) -> None:
    disk = qcow2(tmp_path / "disk.qcow2")
    assert disk_files._takes_direct_io(disk)  # ext4: the copy runs with -t none -T none
    assert not disk_files._takes_direct_io(Path("/proc/version"))  # EINVAL: a plain copy
    with pytest.raises(FileNotFoundError):  # any other error is not "unsupported"
        disk_files._takes_direct_io(tmp_path / "missing")


def test_a_remote_libvirtd_is_copy_and_nothing_is_tried_here(tmp_path: Path) -> None:
    for uri in ("qemu+ssh://localhost/system", "qemu+tcp://127.0.0.1/system"):
        assert choose_storage("h1", uri, tmp_path, None, tmp_path / "images", "auto") == COPY
    assert list(tmp_path.iterdir()) == []  # no directory made, no probe
    assert choose_storage("h1", "qemu:///system", tmp_path, None, tmp_path / "images",
                          "auto") == LINK  # the same directories, on a local libvirtd


def test_only_a_libvirtd_of_this_machine_is_local() -> None:
    assert is_local("qemu:///system") and is_local("qemu+unix:///session")
    assert not is_local("qemu+ssh://host/system") and not is_local("qemu+tcp://host/system")
    assert not is_local("qemu://host/system") and not is_local("test:///default")


def test_hidden_leftovers_are_found_by_their_names(tmp_path: Path) -> None:
    instance_id, tag = str(uuid.uuid4()), "0123abcd"
    disk = tmp_path / f"{instance_id}.qcow2"
    for path in [*disk_files.partials_of(disk), tmp_path / ".x.qcow2.tmp", tmp_path / "a.own",
                 tmp_path / ".qcow2.own"]:
        path.write_bytes(b"part")
    assert disk_files.partial_stems(tmp_path, ".qcow2") == [instance_id]
    assert disk_files.partial_stems(tmp_path / "absent", ".qcow2") == []
    tagged = f"{disk_files.PROBE_PREFIX}{tag}-{uuid.uuid4()}"
    untagged = f"{disk_files.PROBE_PREFIX}{uuid.uuid4()}"
    for name in (tagged, untagged):
        (tmp_path / name).write_bytes(b"probe")
    assert disk_files.probe_files(tmp_path) == {tagged: tag, untagged: ""}
    disk_files.remove_probe_file(tmp_path, tagged)
    assert not (tmp_path / tagged).exists()
    for name in (".x.qcow2.tmp", f"../{tmp_path.name}/{untagged}"):
        with pytest.raises(DiskFileError, match="no probe file"):
            disk_files.remove_probe_file(tmp_path, name)
    assert (tmp_path / ".x.qcow2.tmp").exists() and (tmp_path / untagged).exists()


def test_a_linked_snapshot_a_crash_left_uncommitted_is_a_partial_whose_removal_keeps_the_disk(
    tmp_path: Path,
) -> None:
    images = DirectoryImageStore(tmp_path / "images")
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"the disk" * 512)
    image_id = str(uuid.uuid4())
    disk_files.link_file(disk, images.path_for(image_id))  # the crash: no sidecar written
    assert images.partials() == [image_id]
    images.delete(image_id)  # what reconcile --fix does with a partial-image
    assert disk.read_bytes() == b"the disk" * 512 and disk.stat().st_nlink == 1
