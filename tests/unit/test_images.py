"""DirectoryImageStore (and the small DirectoryVolumeStore) on a temporary directory."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import pytest

from adapters.images import DirectoryImageStore, probe_disk_file
from adapters.volumes import DirectoryVolumeStore
from domain.ports import ImageInfo, ImageNotFound

GiB = 1024**3


def write_qcow2_header(path: Path, virtual_size: int) -> None:
    """Just enough of a qcow2 file for format detection: magic, version, size at offset 24."""
    header = b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", virtual_size)
    path.write_bytes(header + bytes(4096))


@pytest.fixture
def store(tmp_path: Path) -> DirectoryImageStore:
    return DirectoryImageStore(tmp_path / "images")


def test_probe_reads_qcow2_virtual_size_from_the_header(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    write_qcow2_header(image, 20 * GiB)
    assert probe_disk_file(image) == ("qcow2", 20 * GiB)


def test_probe_takes_any_other_file_as_raw(tmp_path: Path) -> None:
    image = tmp_path / "a.raw"
    image.write_bytes(b"x" * 3000)
    assert probe_disk_file(image) == ("raw", 3000)


def test_commit_describes_a_qcow2_file(store: DirectoryImageStore) -> None:
    path = store.path_for("i1")
    write_qcow2_header(path, 2 * GiB)
    info = store.commit("i1", "vm1-shelved", "inst-1")
    assert (info.id, info.name, info.format) == ("i1", "vm1-shelved", "qcow2")
    assert info.virtual_size == 2 * GiB
    assert info.size == path.stat().st_blocks * 512
    assert info.instance_id == "inst-1"
    assert store.get("i1") == info


def test_commit_of_a_raw_file_uses_the_file_size(store: DirectoryImageStore) -> None:
    store.path_for("r1").write_bytes(bytes(8192))
    info = store.commit("r1", "raw", None)
    assert (info.format, info.virtual_size) == ("raw", 8192)


def test_commit_is_idempotent(store: DirectoryImageStore) -> None:
    store.path_for("i1").write_bytes(b"data")
    first = store.commit("i1", "one", None)
    again = store.commit("i1", "another name", "x")
    assert again == first


def test_commit_writes_the_sidecar_atomically(store: DirectoryImageStore) -> None:
    store.path_for("i1").write_bytes(b"data")
    store.commit("i1", "one", None)
    names = sorted(path.name for path in store.root.iterdir())
    assert names == ["i1.img", "i1.json"]  # no temporary file left behind
    assert json.loads((store.root / "i1.json").read_text())["name"] == "one"


def test_commit_of_a_missing_file_raises_image_not_found(store: DirectoryImageStore) -> None:
    with pytest.raises(ImageNotFound):
        store.commit("nothing", "x", None)


def test_a_file_without_sidecar_is_a_partial_not_an_image(store: DirectoryImageStore) -> None:
    store.path_for("half").write_bytes(b"partial")
    store.path_for("whole").write_bytes(b"complete")
    store.commit("whole", "whole", None)
    assert store.get("half") is None
    assert [image.id for image in store.list()] == ["whole"]
    assert store.partials() == ["half"]


def test_delete_removes_file_and_sidecar_and_tolerates_absence(
    store: DirectoryImageStore,
) -> None:
    store.path_for("i1").write_bytes(b"data")
    store.commit("i1", "one", None)
    store.path_for("half").write_bytes(b"partial")
    store.delete("i1")
    store.delete("i1")
    store.delete("half")
    store.delete("never-existed")
    assert list(store.root.iterdir()) == []


def test_import_copies_the_file_under_a_fresh_id(
    store: DirectoryImageStore, tmp_path: Path
) -> None:
    source = tmp_path / "user.qcow2"
    write_qcow2_header(source, GiB)
    info = store.import_file("base", source)
    assert info.name == "base" and info.format == "qcow2" and info.virtual_size == GiB
    assert store.path_for(info.id).read_bytes() == source.read_bytes()
    assert source.exists()  # a copy, not a move
    assert store.import_file("base", source).id != info.id


def test_find_by_id_then_by_newest_name(store: DirectoryImageStore, tmp_path: Path) -> None:
    source = tmp_path / "user.raw"
    source.write_bytes(b"raw data")
    older = store.import_file("base", source)
    newer = store.import_file("base", source)
    assert store.find(older.id) == older
    assert store.find("base") == newer
    assert store.find("unknown") is None
    assert store.find("../etc") is None


@pytest.mark.parametrize("kind", ["missing", "empty", "directory"])
def test_import_refuses_what_is_not_a_readable_non_empty_file(
    store: DirectoryImageStore, tmp_path: Path, kind: str
) -> None:
    source = tmp_path / kind
    if kind == "empty":
        source.write_bytes(b"")
    elif kind == "directory":
        source.mkdir()
    with pytest.raises(ValueError, match=f"cannot import {source}: "):
        store.import_file("x", source)
    assert list(store.root.iterdir()) == []


def test_ids_that_would_leave_the_directory_are_refused(store: DirectoryImageStore) -> None:
    for bad in ["../x", "", ".hidden"]:
        with pytest.raises(ValueError):
            store.path_for(bad)


class TestDirectoryVolumeStore:
    def test_paths_existence_listing_and_idempotent_delete(self, tmp_path: Path) -> None:
        volumes = DirectoryVolumeStore(tmp_path / "volumes")
        path = volumes.path_for("inst-1")
        assert path == tmp_path / "volumes" / "inst-1.qcow2"
        assert not volumes.exists("inst-1") and volumes.list() == []
        path.write_bytes(b"disk")
        assert volumes.exists("inst-1") and volumes.list() == ["inst-1"]
        volumes.delete("inst-1")
        volumes.delete("inst-1")
        assert volumes.list() == []


def test_import_keeps_a_file_of_nothing_sparse(store: DirectoryImageStore, tmp_path: Path) -> None:
    source = tmp_path / "zeros.raw"
    with source.open("wb") as file:  # written for real, block by block: dense zeros
        for _ in range(64):
            file.write(bytes(1024 * 1024))
    assert source.stat().st_blocks * 512 >= 64 * 1024 * 1024
    info = store.import_file("zeros", source)
    assert info.virtual_size == 64 * 1024 * 1024
    assert info.size < 1024 * 1024  # holes, not 64 MiB of zeros
    assert store.path_for(info.id).read_bytes() == source.read_bytes()


@contextmanager
def _copy_end(fifo: Path) -> Iterator[BinaryIO]:
    """The FIFO's writing end once the copy reads it, with a first block written. An open
    made while the first-byte check's reader is still closing pairs with that reader and
    breaks when it goes: then open again (the next open waits for the copy's reader)."""
    for _ in range(100):
        end = fifo.open("wb")
        try:
            end.write(b"x" * 4096)
            end.flush()
        except BrokenPipeError:
            with suppress(BrokenPipeError):
                end.close()
            continue
        with end:
            yield end
        return
    raise AssertionError("the copy never opened the FIFO")


def test_an_import_in_progress_is_neither_an_image_nor_a_partial(
    store: DirectoryImageStore, tmp_path: Path
) -> None:
    source = tmp_path / "slow.raw"
    os.mkfifo(source)  # the copy reads what this test writes, when it writes it
    imported: list[ImageInfo] = []
    importer = threading.Thread(target=lambda: imported.append(store.import_file("b", source)))
    importer.start()
    with source.open("wb") as probe_end:  # the first-byte check reads one byte and closes
        probe_end.write(b"x")
    with _copy_end(source):
        assert _wait_for(lambda: any(store.root.iterdir()))
        names = [path.name for path in store.root.iterdir()]
        assert all(name.startswith(".") and name.endswith(".importing") for name in names)
        assert store.list() == [] and store.partials() == []
    importer.join(timeout=30)
    assert [image.name for image in store.list()] == ["b"] == [i.name for i in imported]
    assert not any(path.name.endswith(".importing") for path in store.root.iterdir())


def test_a_killed_import_leaves_only_a_hidden_file_that_is_ignored(
    store: DirectoryImageStore,
) -> None:
    (store.root / ".0b3c.img.importing").write_bytes(b"half a copy")
    assert store.list() == [] and store.partials() == []


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()
