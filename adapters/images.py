"""Images in a directory shared by every host: `<root>/<id>.img` plus a `<id>.json` sidecar.

The sidecar is written last and atomically, so a data file without one is a partial write
(a snapshot interrupted by a crash): never returned by `get`/`list`, found by `partials()`.
Each sidecar names the store that made the image: a store deletes only its own images, and
finds images by name among its own (then among those made before stores had ids).
An import is copied to a hidden `.<id>.img.importing` first and renamed when complete, so
no import in progress (nor one killed half-way) ever looks like an image or a partial one.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import struct
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from adapters.logs import get_logger
from domain.ports import HypervisorError, ImageInfo, ImageNotFound

log = get_logger()

QCOW2_MAGIC = b"QFI\xfb"
IMAGE_SUFFIX = ".img"
SIDECAR_SUFFIX = ".json"
IMPORTING_SUFFIX = ".importing"


class DiskFile(NamedTuple):
    format: str  # "qcow2" or "raw"
    virtual_size: int  # bytes the guest sees


def probe_disk_file(path: Path) -> DiskFile:
    """Format and virtual size from the header: qcow2 by magic, anything else is raw."""
    with path.open("rb") as file:
        header = file.read(32)
    if header[:4] == QCOW2_MAGIC and len(header) >= 32:
        # qcow2 header: the virtual size is a big-endian u64 at offset 24.
        (virtual_size,) = struct.unpack(">Q", header[24:32])
        return DiskFile("qcow2", virtual_size)
    return DiskFile("raw", path.stat().st_size)


def bytes_on_disk(path: Path) -> int:
    return path.stat().st_blocks * 512


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)  # make the rename itself durable


class DirectoryImageStore:
    """`domain.ports.ImageStore` over one directory, for the store `store_id` (None: no
    store, as for tests of the directory alone)."""

    def __init__(self, root: Path, store_id: str | None = None) -> None:
        self.root = root
        self.store_id = store_id
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, image_id: str) -> Path:
        return self.root / f"{_checked_id(image_id)}{IMAGE_SUFFIX}"

    def _sidecar(self, image_id: str) -> Path:
        return self.root / f"{_checked_id(image_id)}{SIDECAR_SUFFIX}"

    def commit(self, image_id: str, name: str, instance_id: str | None) -> ImageInfo:
        existing = self.get(image_id)
        if existing is not None:
            return existing
        path = self.path_for(image_id)
        if not path.is_file():
            raise ImageNotFound(f"image {image_id}: no file {path} to commit")
        fsync_path(path)  # the data must be durable before the sidecar says it is complete
        info = _describe(image_id, name, instance_id, path, self.store_id)
        _write_atomically(self._sidecar(image_id), json.dumps(dataclasses.asdict(info)))
        log.info("image committed", image_id=image_id, name=name, size=info.size)
        return info

    def get(self, image_id: str) -> ImageInfo | None:
        sidecar = self._sidecar(image_id)
        if not sidecar.is_file() or not self.path_for(image_id).is_file():
            return None
        fields = json.loads(sidecar.read_text(encoding="utf-8"))
        return ImageInfo(**fields)

    def delete(self, image_id: str) -> None:
        existing = self.get(image_id)
        if existing is not None and not self.may_delete(existing):
            raise HypervisorError(f"image {image_id} belongs to store {existing.store_id}, "
                                  "not this one: not deleted")
        # Sidecar first: a crash in between leaves a partial file, never a broken image.
        self._sidecar(image_id).unlink(missing_ok=True)
        self.path_for(image_id).unlink(missing_ok=True)
        log.info("image deleted", image_id=image_id)

    def list(self) -> list[ImageInfo]:
        images = (self.get(image_id) for image_id in self._ids_with_suffix(SIDECAR_SUFFIX))
        found = [image for image in images if image is not None]
        return sorted(found, key=lambda image: (image.created_at, image.id))

    def may_delete(self, image: ImageInfo) -> bool:
        """Another store's image never; one from before stores had ids is judged by the
        caller, by the ids this store issued."""
        return image.store_id is None or image.store_id == self.store_id

    def usable(self) -> builtins.list[ImageInfo]:
        """The images this store may boot from by name: its own, and those made before
        stores had ids (another store's are not found by name)."""
        return [image for image in self.list() if image.store_id in (None, self.store_id)]

    def import_file(self, name: str, src: Path) -> ImageInfo:
        """Copy a user's qcow2 or raw file in under a fresh id."""
        _check_importable(src)
        image_id = str(uuid.uuid4())
        final = self.path_for(image_id)
        importing = final.with_name(f".{final.name}{IMPORTING_SUFFIX}")
        try:
            _copy_sparse(src, importing)
            fsync_path(importing)
            os.replace(importing, final)
        finally:
            importing.unlink(missing_ok=True)
        return self.commit(image_id, name, None)

    def find(self, name_or_id: str) -> ImageInfo | None:
        """The image with this id, else the newest of this store's images with this name,
        else the newest with this name made before stores had ids."""
        if _is_valid_id(name_or_id):
            by_id = self.get(name_or_id)
            if by_id is not None:
                return by_id
        named = [image for image in self.usable() if image.name == name_or_id]
        own = [image for image in named if image.store_id is not None]
        found = own or named
        return found[-1] if found else None

    def partials(self) -> builtins.list[str]:
        """Ids of image files with no sidecar: writes a crash interrupted."""
        ids = self._ids_with_suffix(IMAGE_SUFFIX)
        return sorted(i for i in ids if not self._sidecar(i).is_file())

    def probe_files(self) -> dict[str, str]:
        """Storage probes a killed `host add` left here: name -> the store tag it carries."""
        from adapters import disk_files  # disk_files uses this module's fsync_path

        return disk_files.probe_files(self.root)

    def delete_probe_file(self, name: str) -> None:
        from adapters import disk_files

        disk_files.remove_probe_file(self.root, name)

    def _ids_with_suffix(self, suffix: str) -> builtins.list[str]:
        # Skips our own hidden temporary files and anything else that is not an id.
        ids = (path.name.removesuffix(suffix) for path in self.root.glob(f"*{suffix}"))
        return [image_id for image_id in ids if _is_valid_id(image_id)]


def _describe(
    image_id: str, name: str, instance_id: str | None, path: Path, store_id: str | None
) -> ImageInfo:
    disk = probe_disk_file(path)
    return ImageInfo(
        id=image_id,
        name=name,
        format=disk.format,
        size=bytes_on_disk(path),
        virtual_size=disk.virtual_size,
        created_at=datetime.now(UTC).isoformat(),
        instance_id=instance_id,
        store_id=store_id,
    )


def _copy_sparse(src: Path, dest: Path) -> None:
    """cp keeps holes and writes runs of zeros as holes: 20 GB of nothing stays nothing."""
    done = subprocess.run(
        ["cp", "--sparse=always", "--", str(src), str(dest)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ValueError(f"cannot import {src}: {lines[-1]}")


def _is_valid_id(image_id: str) -> bool:
    # An id becomes a file name: nothing that could leave the directory or hide in it.
    return bool(image_id) and "/" not in image_id and not image_id.startswith(".")


def _checked_id(image_id: str) -> str:
    if not _is_valid_id(image_id):
        raise ValueError(f"invalid image id {image_id!r}")
    return image_id


def _check_importable(src: Path) -> None:
    try:
        with src.open("rb") as file:
            first = file.read(1)
    except OSError as exc:
        raise ValueError(f"cannot import {src}: {exc.strerror or exc}") from exc
    if not first:
        raise ValueError(f"cannot import {src}: the file is empty")
