"""A host's disks: its own dir pool, and the files it copies from and to other directories.

The local root disk of instance `<id>` is `<id>.qcow2` in the store's own dir pool
`shelf-disks-<host>-<tag>` (`<data_dir>/hosts/<host>/disks-<tag>`; `shelf-disks-<host>` and
`…/disks` for a host added before the store had an id). Files that are not on a host
(images, exports, volumes) are reached through transient dir pools on their directories
(`shelf-images-…`, `shelf-volumes-…`, or any pool that already serves the directory), so
that copies from them are libvirt's own (`createXMLFrom`, i.e. `qemu-img convert`).

How a snapshot and a spawn from an image are made is the host's storage strategy
(`disk_files`): `reflink` clones both ways, `link` hard-links a snapshot to the powered-off
disk, `copy` copies. Whatever the strategy, a disk that shares its file with a snapshot
is given a file of its own before its domain starts or it is resized (`before_start`), so
nothing ever writes through to an image. A clone or link the filesystem refuses after all
(the directories moved since the strategy was chosen) falls back to the copy, logged.

`PoolStorage` is given to a host (`LibvirtHost`), which calls it inside its operations:
every method here may raise libvirt's errors, OSError or `Refusal`, which the host's
operation wrapper turns into one line.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import libvirt

from adapters import disk_files
from adapters.disk_files import COPY, LINK, REFLINK, DiskFileError
from adapters.host_connection import HostConnection, MissingImage, Refusal, is_missing, one_line
from adapters.images import bytes_on_disk, probe_disk_file
from adapters.libvirt_xml import dir_pool_xml, pool_target_path, volume_xml
from adapters.logs import get_logger
from domain.store_identity import StoreMark

log = get_logger()

DISK_SUFFIX = ".qcow2"
REFRESH_WAIT = 60.0  # seconds to wait for a pool busy with another copy before giving up


def disks_pool_for(host: str, data_dir: Path, mark: StoreMark | None) -> tuple[Path, str]:
    """A host's disks directory and pool: the store's own, so that two stores sharing a
    libvirtd and a data directory never share one; the old ones for a host added before
    the store had an id (its disks are there)."""
    if mark is None or host in mark.legacy_hosts:
        return data_dir / "hosts" / host / "disks", f"shelf-disks-{host}"
    return data_dir / "hosts" / host / f"disks-{mark.tag}", f"shelf-disks-{host}-{mark.tag}"


class PoolStorage:
    """The disks of one host, in its dir pool, over the host's connection."""

    def __init__(self, host: HostConnection, strategy: str = COPY) -> None:
        self.host = host
        self.strategy = strategy
        self.disks_dir, self.pool_name = disks_pool_for(host.name, host.data_dir, host.mark)

    @property
    def _conn(self) -> libvirt.virConnect:
        return self.host.conn

    # --- the disks pool ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Define and start the disks pool when absent; refuse one that serves another dir."""
        self.disks_dir.mkdir(parents=True, exist_ok=True)
        try:
            pool = self._conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as exc:
            if not is_missing(exc, libvirt.VIR_ERR_NO_STORAGE_POOL):
                raise
            xml = dir_pool_xml(self.pool_name, self.disks_dir)
            pool = self._conn.storagePoolDefineXML(xml, 0)
            pool.setAutostart(1)
            log.info("disks pool defined", host=self.host.name, path=str(self.disks_dir))
        target = pool_target_path(pool.XMLDesc(0))
        if target is not None and target.resolve() != self.disks_dir.resolve():
            # Another store (or this one with another SHELF_DATA_DIR) made it: its disks
            # are not ours to use or judge.
            raise Refusal(f"pool {self.pool_name} serves {target}, not "
                          f"{self.disks_dir}: another store or SHELF_DATA_DIR uses it")
        if not pool.isActive():
            pool.create(0)

    def pool(self) -> libvirt.virStoragePool:
        return self._conn.storagePoolLookupByName(self.pool_name)

    def capacity_bytes(self) -> int:
        return int(self.pool().info()[1])

    def find_disk(self, instance_id: str) -> libvirt.virStorageVol | None:
        pool = self.pool()
        self._refresh(pool)
        return self._find_volume(pool, f"{instance_id}{DISK_SUFFIX}")

    def disk_path(self, instance_id: str) -> Path:
        disk = self.find_disk(instance_id)
        if disk is None:
            raise Refusal(f"no disk {instance_id}{DISK_SUFFIX}; create it first")
        return Path(disk.path())

    def disks(self) -> list[str]:
        pool = self.pool()
        self._refresh(pool)
        names = [str(name) for name in pool.listVolumes()]
        return sorted(n.removesuffix(DISK_SUFFIX) for n in names if n.endswith(DISK_SUFFIX))

    def _find_volume(
        self, pool: libvirt.virStoragePool, name: str
    ) -> libvirt.virStorageVol | None:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if is_missing(exc, libvirt.VIR_ERR_NO_STORAGE_VOL):
                return None
            raise

    def _refresh(self, pool: libvirt.virStoragePool) -> None:
        """Best effort: libvirt refuses to refresh a pool while it copies into it, and then
        its list is current anyway."""
        try:
            pool.refresh(0)
        except libvirt.libvirtError as exc:
            log.debug("pool refresh skipped", host=self.host.name, error=one_line(exc))

    # --- disk steps ----------------------------------------------------------------------------

    def create_disk(self, instance_id: str, capacity: int, image_path: Path | None) -> None:
        """The disk, blank or from the image; idempotent."""
        existing = self.find_disk(instance_id)
        if existing is not None:
            # Done already (the image may even be gone by now); finish a resize a crash cut.
            self._own_file(existing)
            self._ensure_capacity(existing, capacity)
            return
        pool = self.pool()
        name = f"{instance_id}{DISK_SUFFIX}"
        if image_path is None:
            pool.createXML(volume_xml(name, capacity), 0)
        else:
            capacity = max(capacity, image_virtual_size(image_path))
            self._copy_image(image_path, pool, name, capacity)
        log.info("disk created", host=self.host.name, instance_id=instance_id, capacity=capacity)

    def partial_disks(self) -> list[str]:
        """Instance ids whose disk has a hidden partial file here (`.<id>.qcow2.cloning`,
        `.<id>.qcow2.own`): what a crash in a clone or an unlinking left."""
        return disk_files.partial_stems(self.disks_dir, DISK_SUFFIX)

    def delete_partial_disk(self, instance_id: str) -> None:
        """What an interrupted clone to, or unlinking of, the instance's disk left (hidden
        names made from the disk's own); the disk itself stays."""
        for partial in disk_files.partials_of(self.disks_dir / f"{instance_id}{DISK_SUFFIX}"):
            partial.unlink(missing_ok=True)

    def probe_files(self) -> dict[str, str]:
        return disk_files.probe_files(self.disks_dir)

    def delete_probe_file(self, name: str) -> None:
        disk_files.remove_probe_file(self.disks_dir, name)

    def delete_disk(self, instance_id: str) -> bool:
        """Delete the disk (its name only: a snapshot linked to it keeps its own) and what
        an interrupted clone or unlinking of it left (hidden names made from its own)."""
        self.delete_partial_disk(instance_id)
        disk = self.find_disk(instance_id)
        if disk is None:
            return False
        disk.delete(0)
        return True

    def before_start(self, instance_id: str) -> None:
        """A disk that shares its file with a snapshot gets one of its own first."""
        disk = self.find_disk(instance_id)
        if disk is not None:
            self._own_file(disk)

    def _own_file(self, disk: libvirt.virStorageVol) -> None:
        if disk_files.break_link(Path(disk.path())):
            self._refresh(self.pool())

    def export_disk(self, instance_id: str, dest: Path) -> int:
        domain = self.host._find_domain(instance_id)
        if domain is not None and domain.isActive():
            raise Refusal("the domain is running; power it off first")
        disk = self.find_disk(instance_id)
        if disk is None:
            raise Refusal(f"no disk {instance_id}{DISK_SUFFIX} in pool {self.pool_name}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self._write_export(disk, dest)

    def create_volume(self, path: Path, capacity: int, image_path: Path | None) -> int:
        if image_path is not None:
            capacity = max(capacity, image_virtual_size(image_path))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_volume(path, capacity, image_path)
        return capacity

    # Storage steps that differ for the test driver (overridden in TestDriverStorage).

    def _copy_image(
        self, image_path: Path, pool: libvirt.virStoragePool, name: str, capacity: int
    ) -> None:
        if self.strategy == REFLINK and disk_files.standalone_qcow2(image_path):
            try:
                volume = self._clone_in(image_path, pool, name)
            except DiskFileError as exc:
                log.warning("clone failed; copying", host=self.host.name, error=str(exc))
            else:
                self._ensure_capacity(volume, capacity)
                return
        source = self._volume_for_file(image_path, "images")
        volume = pool.createXMLFrom(volume_xml(name, capacity), source, 0)
        self._ensure_capacity(volume, capacity)

    def _ensure_capacity(self, volume: libvirt.virStorageVol, capacity: int) -> None:
        # createXMLFrom keeps the source's virtual size: grow the copy to the size asked for.
        if int(volume.info()[1]) < capacity:
            volume.resize(capacity, 0)

    def _clone_in(
        self, image_path: Path, pool: libvirt.virStoragePool, name: str
    ) -> libvirt.virStorageVol:
        """The image cloned into the pool: under a hidden name first, renamed when whole,
        so a crash never leaves a partial clone under the disk's name."""
        cloning = disk_files.cloning_name(self.disks_dir / name)
        disk_files.clone_file(image_path, cloning)
        os.replace(cloning, self.disks_dir / name)
        self._refresh_waiting(pool)
        log.info("disk cloned from image", host=self.host.name, disk=name)
        return pool.storageVolLookupByName(name)

    def _write_export(self, disk: libvirt.virStorageVol, dest: Path) -> int:
        """The snapshot of the powered-off disk at dest: a clone, a hard link (see
        `before_start`: the disk gets a file of its own before it runs again) or a
        flattened qcow2 copy, what Nova's cold snapshot makes. A disk that needs another
        file (a backing file) is always flattened."""
        path = Path(disk.path())
        how = COPY
        if self.strategy in (REFLINK, LINK) and disk_files.standalone_qcow2(path):
            how = self.strategy
        try:
            if how == REFLINK:
                disk_files.clone_file(path, dest)
            elif how == LINK:
                disk_files.link_file(path, dest)
        except DiskFileError as exc:
            log.warning(f"{how} failed; copying", host=self.host.name, error=str(exc))
            how = COPY
        if how == COPY:
            # qemu-img itself rather than libvirt's createXMLFrom, which made the same copy
            # twice as slowly here (a 4 GiB disk: 12.9 s against 6.1 s, see bench/qemu.py).
            disk_files.flatten(path, dest)
        log.info("snapshot written", host=self.host.name, dest=str(dest), strategy=how)
        return bytes_on_disk(dest)

    def _write_volume(self, path: Path, capacity: int, image_path: Path | None) -> None:
        pool = self._dir_pool(path.parent, "volumes")
        self._remove_leftover(pool, path)
        if image_path is None:
            pool.createXML(volume_xml(path.name, capacity), 0)
            return
        source = self._volume_for_file(image_path, "images")
        volume = pool.createXMLFrom(volume_xml(path.name, capacity), source, 0)
        self._ensure_capacity(volume, capacity)

    # --- dir pools on other directories (real libvirt only) --------------------------------

    def _dir_pool(self, directory: Path, purpose: str) -> libvirt.virStoragePool:
        """The active pool serving a directory; a transient `shelf-<purpose>-…` one if none."""
        directory = directory.resolve()
        pool = self._pool_at(directory)
        if pool is None:
            pool = self._create_transient_pool(directory, purpose)
        elif not pool.isActive():
            pool.create(0)
        return pool

    def _pool_at(self, directory: Path) -> libvirt.virStoragePool | None:
        # libvirt allows one pool per directory, under whatever name: find it by its target.
        for pool in self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_DIR):
            try:
                target = pool_target_path(pool.XMLDesc(0))
            except libvirt.libvirtError as exc:
                if is_missing(exc, libvirt.VIR_ERR_NO_STORAGE_POOL):
                    continue  # another store or tool removed it since the listing
                raise
            if target is not None and target.resolve() == directory:
                return pool
        return None

    def _create_transient_pool(
        self, directory: Path, purpose: str
    ) -> libvirt.virStoragePool:
        digest = hashlib.sha1(str(directory).encode()).hexdigest()[:8]
        name = f"shelf-{purpose}-{digest}"
        try:
            return self._conn.storagePoolCreateXML(dir_pool_xml(name, directory), 0)
        except libvirt.libvirtError:
            raced = self._pool_at(directory)  # another thread created it first
            if raced is None:
                raise
            return raced

    def _volume_for_file(self, path: Path, purpose: str) -> libvirt.virStorageVol:
        pool = self._dir_pool(path.parent, purpose)
        volume = self._find_volume(pool, path.name)
        if volume is None:
            # A file written outside libvirt (an imported image): rescan the directory.
            self._refresh_waiting(pool)
            volume = pool.storageVolLookupByName(path.name)
        return volume

    def _refresh_waiting(self, pool: libvirt.virStoragePool) -> None:
        # libvirt refuses to refresh a pool that has a copy in flight: wait for it to end.
        deadline = time.monotonic() + REFRESH_WAIT
        while True:
            try:
                pool.refresh(0)
                return
            except libvirt.libvirtError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _remove_leftover(self, pool: libvirt.virStoragePool, path: Path) -> None:
        """A partial file from an interrupted copy, or a stale entry in the pool's list."""
        volume = self._find_volume(pool, path.name)
        if volume is not None:
            try:
                volume.delete(0)
            except libvirt.libvirtError:
                self._refresh_waiting(pool)  # the file was gone already: forget the entry
        path.unlink(missing_ok=True)


def image_virtual_size(image_path: Path) -> int:
    if not image_path.is_file():
        raise MissingImage(f"image file {image_path} not found")
    return probe_disk_file(image_path).virtual_size
