"""The Host aggregate: a hypervisor's capacity and the claims held against it.

Claims go through this aggregate so that optimistic concurrency on its version makes
over-commit impossible: two workers claiming the last room both read version N, only one
can record version N+1.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NoRoom

# How a host runs its guests, as Nova's [libvirt] virt_type: kvm, qemu (TCG), or auto
# (chosen by the host's driver when first used).
VIRT_TYPES = ("auto", "kvm", "qemu")

# How a host's disks reach the image store and back (README, "Where to put the data
# directory"): `host add --storage auto` records the best its filesystems allow, `copy`
# forces the copy. Hosts added before the strategy was kept read as copy.
STORAGE_MODES = ("auto", "copy")
STORAGE_STRATEGIES = ("reflink", "link", "copy")

HOST_NAMESPACE = uuid.UUID("0b8e4c3e-3a0f-4c1e-9b3e-6a3e2f1d7c42")


def host_id_for(name: str) -> uuid.UUID:
    """One aggregate per host name: adding a name twice collides in the store."""
    return uuid.uuid5(HOST_NAMESPACE, name)


class Host(Aggregate):
    """A host's capacity and claims. Removing it (`HostRemoved`) needs it free of claims;
    its name may be added again later (`HostAddedAgain`: same aggregate, fresh capacity)."""

    removed = False  # a class default: snapshots taken before removal existed lack it
    storage = "copy"  # and those taken before the storage strategy was kept lack it

    @staticmethod
    def create_id(name: str, **_: Any) -> uuid.UUID:
        return host_id_for(name)

    @event("HostAdded")
    def __init__(
        self, name: str, uri: str, vcpus: int, memory_mb: int, disk_gb: int,
        user: str, request_id: str, virt_type: str = "auto", storage: str = "copy",
    ) -> None:
        self.name, self.uri = name, uri
        self.removed = False
        # kvm, qemu (TCG) or auto (chosen when the host is first used); hosts added before
        # it was kept are auto.
        self.virt_type = virt_type
        # reflink, link or copy: chosen when the host was added (STORAGE_STRATEGIES).
        self.storage = storage
        self.vcpus, self.memory_mb, self.disk_gb = vcpus, memory_mb, disk_gb
        self.claims: dict[str, dict[str, int]] = {}
        # The sum of the claims, kept as they come and go: a host with thousands of
        # claims must not re-add them all for every event (projections read it per event).
        self.in_use: dict[str, int] = {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}

    def used(self) -> dict[str, int]:
        return dict(self.in_use)

    def free(self) -> dict[str, int]:
        used = self.used()
        return {
            "vcpus": self.vcpus - used["vcpus"],
            "memory_mb": self.memory_mb - used["memory_mb"],
            "disk_gb": self.disk_gb - used["disk_gb"],
        }

    def fits(self, vcpus: int, memory_mb: int, disk_gb: int) -> bool:
        free = self.free()
        return vcpus <= free["vcpus"] and memory_mb <= free["memory_mb"] and (
            disk_gb <= free["disk_gb"]
        )

    def claim(
        self, instance_id: str, vcpus: int, memory_mb: int, disk_gb: int,
        user: str, request_id: str,
    ) -> None:
        """Hold resources for an instance; a second claim by the same instance is a no-op."""
        if instance_id in self.claims:
            return
        if self.removed:
            raise NoRoom(f"No valid host was found: host {self.name} has been removed")
        if not self.fits(vcpus, memory_mb, disk_gb):
            free = self.free()
            raise NoRoom(
                f"host {self.name} has no room for {vcpus} vcpus, {memory_mb} MB, {disk_gb} GB "
                f"(free: {free['vcpus']} vcpus, {free['memory_mb']} MB, {free['disk_gb']} GB)"
            )
        self._claimed(
            instance_id=instance_id, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
            user=user, request_id=request_id,
        )

    @event("Claimed")
    def _claimed(
        self, instance_id: str, vcpus: int, memory_mb: int, disk_gb: int,
        user: str, request_id: str,
    ) -> None:
        self.claims[instance_id] = {"vcpus": vcpus, "memory_mb": memory_mb, "disk_gb": disk_gb}
        for key, amount in self.claims[instance_id].items():
            self.in_use[key] += amount

    def remove(self, user: str, request_id: str) -> None:
        if self.claims:
            raise Conflict(
                f"host {self.name} can't be removed: {len(self.claims)} instance(s) hold "
                f"claims there ({', '.join(sorted(self.claims)[:3])}"
                f"{', …' if len(self.claims) > 3 else ''}); delete them, or use --force")
        self._removed(user=user, request_id=request_id)

    @event("HostRemoved")
    def _removed(self, user: str, request_id: str) -> None:
        self.removed = True

    def add_again(
        self, uri: str, vcpus: int, memory_mb: int, disk_gb: int, user: str, request_id: str,
        virt_type: str = "auto", storage: str = "copy",
    ) -> None:
        """A removed host's name added again, with what it is now."""
        if not self.removed:
            raise Conflict(f"host {self.name} already exists")
        self._added_again(uri=uri, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
                          user=user, request_id=request_id, virt_type=virt_type,
                          storage=storage)

    @event("HostAddedAgain")
    def _added_again(
        self, uri: str, vcpus: int, memory_mb: int, disk_gb: int, user: str, request_id: str,
        virt_type: str = "auto", storage: str = "copy",
    ) -> None:
        self.uri, self.vcpus, self.memory_mb, self.disk_gb = uri, vcpus, memory_mb, disk_gb
        self.virt_type, self.storage = virt_type, storage
        self.removed = False

    def release(self, instance_id: str, user: str, request_id: str) -> None:
        if instance_id in self.claims:
            self._released(instance_id=instance_id, user=user, request_id=request_id)

    @event("Released")
    def _released(self, instance_id: str, user: str, request_id: str) -> None:
        for key, amount in self.claims.pop(instance_id).items():
            self.in_use[key] -= amount


CATALOG_ID = uuid.UUID("9a4f6c1d-2b3e-4f5a-8c7d-0e1f2a3b4c5d")


class HostCatalog(Aggregate):
    """The names of every host, so the scheduler can list them from the event store."""

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return CATALOG_ID

    @event("HostCatalogCreated")
    def __init__(self) -> None:
        self.names: list[str] = []

    def register(self, name: str) -> None:
        if name not in self.names:
            self._registered(name=name)

    @event("HostRegistered")
    def _registered(self, name: str) -> None:
        self.names.append(name)

    def unregister(self, name: str) -> None:
        if name in self.names:
            self._unregistered(name=name)

    @event("HostUnregistered")
    def _unregistered(self, name: str) -> None:
        self.names.remove(name)
