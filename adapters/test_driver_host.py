"""A host on libvirt's test driver (`test:///ABS/PATH/node.xml`).

Its state lives only in its connection, and its volumes are bookkeeping with no files.
`TestDriverStorage` emulates the file side honestly: a disk "copied" from an image is a
bookkeeping volume of the right capacity; `export_disk` writes a sparse raw file of the
disk's capacity (the disk holds nothing but zeros) and returns that apparent size (a real
export returns the bytes allocated on disk); `create_volume` writes a sparse raw file of
the volume's size. Its storage strategy is always `copy`: nothing is linked or cloned.
"""

from __future__ import annotations

from pathlib import Path

import libvirt

from adapters.disk_files import COPY
from adapters.host_driver import LibvirtHost
from adapters.libvirt_connection import ConnectionBounds
from adapters.libvirt_storage import PoolStorage
from adapters.libvirt_xml import DomainOptions, volume_xml
from domain.store_identity import StoreMark


class TestDriverStorage(PoolStorage):
    """The test driver's disks: bookkeeping volumes, and honest files where one is asked."""

    __test__ = False

    def _own_file(self, disk: libvirt.virStorageVol) -> None:
        """A bookkeeping volume has no file to share with a snapshot."""

    def _copy_image(
        self, image_path: Path, pool: libvirt.virStoragePool, name: str, capacity: int
    ) -> None:
        # Volumes are bookkeeping here: the "copy" is a volume of the copy's capacity.
        pool.createXML(volume_xml(name, capacity), 0)

    def _ensure_capacity(self, volume: libvirt.virStorageVol, capacity: int) -> None:
        """Nothing to grow: the test driver sizes volumes when it creates them."""

    def _write_export(self, disk: libvirt.virStorageVol, dest: Path) -> int:
        # No data behind the volume: the honest export is all zeros, a sparse raw file.
        capacity = int(disk.info()[1])
        _write_sparse_file(dest, capacity)
        return capacity

    def _write_volume(self, path: Path, capacity: int, image_path: Path | None) -> None:
        _write_sparse_file(path, capacity)


class TestDriverHost(LibvirtHost):
    """A host on libvirt's test driver: all state in this one connection, no disk files.

    `guests_ignore_shutdown` defines domains with `<on_poweroff>restart</on_poweroff>`, which
    the test driver keeps running on shutdown(): for tests of the clean-shutdown timeout.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, name: str, uri: str, data_dir: Path, bounds: ConnectionBounds | None = None,
        mark: StoreMark | None = None, *, guests_ignore_shutdown: bool = False,
    ) -> None:
        self.guests_ignore_shutdown = guests_ignore_shutdown
        super().__init__(name, uri, data_dir, bounds, mark=mark)

    def _storage(self, strategy: str) -> PoolStorage:
        # Whatever was asked: an export here writes a file of its own, a spawn makes a
        # bookkeeping volume; nothing is linked or cloned, so the strategy is honestly copy.
        return TestDriverStorage(self, COPY)

    def _can_reconnect(self) -> bool:
        return False  # a new connection would be a fresh, empty test host

    def _domain_options(self) -> DomainOptions:
        on_poweroff = "restart" if self.guests_ignore_shutdown else "destroy"
        return DomainOptions(virt_type="test", on_poweroff=on_poweroff)

    def _undefine_flags(self) -> int:
        # The test driver refuses VIR_DOMAIN_UNDEFINE_NVRAM.
        return int(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        )


def _write_sparse_file(path: Path, size: int) -> None:
    with path.open("wb") as file:
        file.truncate(size)
