"""`domain.ports.HostDriver` over libvirt-python: one long-lived connection per host.

A host is its connection (`host_connection`), its domains and power (`libvirt_domains`),
its DHCP entries (`libvirt_dhcp`) and its storage (`libvirt_storage.PoolStorage`, given
to it: the test driver's host gives another). Names on a host: domain `shelf-<instance
id>`, disks in the store's own dir pool (see `libvirt_storage`), network `shelf-net`.
"""

from __future__ import annotations

from pathlib import Path

from adapters.disk_files import COPY
from adapters.host_connection import operation
from adapters.libvirt_connection import ConnectionBounds
from adapters.libvirt_dhcp import DhcpMixin
from adapters.libvirt_domains import DomainsMixin
from adapters.libvirt_storage import PoolStorage
from adapters.libvirt_xml import NETWORK_NAME, GiB
from adapters.logs import get_logger
from domain.ports import Capacity, DomainSpec
from domain.store_identity import StoreMark

log = get_logger()


class LibvirtHost(DomainsMixin, DhcpMixin):
    """A host served by a real libvirtd (qemu:///system, qemu+ssh://…)."""

    def __init__(
        self, name: str, uri: str, data_dir: Path, bounds: ConnectionBounds | None = None,
        virt_type: str = "auto",
        mark: StoreMark | None = None,
        storage: str = COPY,
    ) -> None:
        self._auto_virt_type = virt_type == "auto"
        self._virt_type = None if self._auto_virt_type else virt_type
        super().__init__(name, uri, data_dir, bounds, mark)
        self.storage = self._storage(storage)
        self.disks_dir, self.disks_pool_name = self.storage.disks_dir, self.storage.pool_name

    def _storage(self, strategy: str) -> PoolStorage:
        """The host's disks, copied, linked or cloned as `strategy` (the one recorded when
        the host was added: reflink, link or copy) says."""
        return PoolStorage(self, strategy)

    # --- first use: the disks pool and the network ----------------------------------------

    def _prepare(self) -> None:
        """Create and start the host's disks pool and the shelf network when absent."""
        self.storage.prepare()
        self._ensure_network()

    def _preparing(self) -> str:
        return f"pool {self.disks_pool_name} and network {NETWORK_NAME}"

    # --- capacity ---------------------------------------------------------------------------

    @operation("read capacity")
    def capacity(self) -> Capacity:
        node = self._conn.getInfo()  # [model, memory MiB, cpus, mhz, ...]
        pool_capacity = self.storage.capacity_bytes()
        return Capacity(vcpus=int(node[2]), memory_mb=int(node[1]), disk_gb=pool_capacity // GiB)

    # --- disks ----------------------------------------------------------------------------

    def root_disk_path(self, instance_id: str) -> Path:
        return self.storage.disk_path(instance_id)

    def before_start(self, instance_id: str) -> None:
        self.storage.before_start(instance_id)

    @operation("list disks")
    def disks(self) -> list[str]:
        return self.storage.disks()

    @operation("list partial disk files")
    def partial_disks(self) -> list[str]:
        return self.storage.partial_disks()

    @operation("delete partial disk files of shelf-{instance_id}")
    def delete_partial_disk(self, instance_id: str) -> None:
        self.storage.delete_partial_disk(instance_id)
        log.info("partial disk files deleted", host=self.name, instance_id=instance_id)

    @operation("list probe files")
    def probe_files(self) -> dict[str, str]:
        return self.storage.probe_files()

    @operation("delete probe file {name}")
    def delete_probe_file(self, name: str) -> None:
        self.storage.delete_probe_file(name)

    @operation("look up disk of shelf-{instance_id}")
    def has_disk(self, instance_id: str) -> bool:
        return self.storage.find_disk(instance_id) is not None

    @operation("create disk for shelf-{spec.instance_id}")
    def create_disk(self, spec: DomainSpec, image_path: Path | None) -> None:
        self.storage.create_disk(spec.instance_id, spec.disk_gb * GiB, image_path)

    @operation("delete disk of shelf-{instance_id}")
    def delete_disk(self, instance_id: str) -> None:
        if self.storage.delete_disk(instance_id):
            log.info("disk deleted", host=self.name, instance_id=instance_id)

    @operation("export disk of shelf-{instance_id} to {dest}")
    def export_disk(self, instance_id: str, dest: Path) -> int:
        size = self.storage.export_disk(instance_id, dest)
        log.info("disk exported", host=self.name, instance_id=instance_id, dest=str(dest))
        return size

    @operation("create volume {path}")
    def create_volume(self, path: Path, size_gb: int, image_path: Path | None) -> None:
        if path.exists():
            return
        capacity = self.storage.create_volume(path, size_gb * GiB, image_path)
        log.info("volume created", host=self.name, path=str(path), capacity=capacity)
