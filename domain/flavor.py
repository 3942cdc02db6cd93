"""Flavors: named sizes an instance is booted from (Nova's flavors).

One `Flavor` aggregate per name (its id derives from the name, as a host's does), and one
`FlavorCatalog` that lists the live flavors by their public id, so listing needs no read
model and two creates racing for a name or an id can't both succeed (both are saved in one
transaction, under optimistic concurrency on each). A deleted flavor's name can be used
again: the same aggregate is defined anew. An instance keeps a copy of the flavor it was
built from, so deleting or redefining a flavor never changes an instance.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NotFound, UsageError
from domain.service import RecordConflict, Repository, find

FLAVOR_NAMESPACE = uuid.UUID("3c5e7a92-4f1b-4d6e-a8c0-7b2d9e1f4a63")
FLAVOR_CATALOG_ID = uuid.UUID("e2b7c4d1-8a3f-4e5b-9c6d-1f0a2b3c4d5e")


def flavor_id_for(name: str) -> uuid.UUID:
    return uuid.uuid5(FLAVOR_NAMESPACE, name)


class Flavor(Aggregate):
    """A named size: vcpus, memory (MB), root disk (GB), and Nova's other fields."""

    @staticmethod
    def create_id(name: str, **_: Any) -> uuid.UUID:
        return flavor_id_for(name)

    @event("FlavorCreated")
    def __init__(
        self, *, name: str, flavor_id: str | None, vcpus: int, memory_mb: int, disk_gb: int,
        ephemeral_gb: int, swap_mb: int, is_public: bool, description: str | None,
        extra_specs: dict[str, str], user: str, request_id: str,
    ) -> None:
        self.name = name
        self._define(flavor_id, vcpus, memory_mb, disk_gb, ephemeral_gb, swap_mb, is_public,
                     description, extra_specs)

    def _define(
        self, flavor_id: str | None, vcpus: int, memory_mb: int, disk_gb: int,
        ephemeral_gb: int, swap_mb: int, is_public: bool, description: str | None,
        extra_specs: dict[str, str],
    ) -> None:
        self.flavor_id: str = flavor_id or str(self.id)
        self.vcpus, self.memory_mb, self.disk_gb = vcpus, memory_mb, disk_gb
        self.ephemeral_gb, self.swap_mb = ephemeral_gb, swap_mb
        self.is_public, self.description = is_public, description
        self.extra_specs = dict(extra_specs)
        self.deleted = False

    @event("FlavorRedefined")
    def redefine(
        self, *, flavor_id: str | None, vcpus: int, memory_mb: int, disk_gb: int,
        ephemeral_gb: int, swap_mb: int, is_public: bool, description: str | None,
        extra_specs: dict[str, str], user: str, request_id: str,
    ) -> None:
        """A deleted flavor's name, used again."""
        self._define(flavor_id, vcpus, memory_mb, disk_gb, ephemeral_gb, swap_mb, is_public,
                     description, extra_specs)

    @event("FlavorDeleted")
    def delete(self, user: str, request_id: str) -> None:
        self.deleted = True

    def snapshot(self) -> dict[str, Any]:
        """What an instance built from this flavor keeps (Nova embeds the same)."""
        return {"id": self.flavor_id, "name": self.name, "vcpus": self.vcpus,
                "memory_mb": self.memory_mb, "disk_gb": self.disk_gb,
                "ephemeral_gb": self.ephemeral_gb, "swap_mb": self.swap_mb,
                "extra_specs": dict(self.extra_specs)}


class FlavorCatalog(Aggregate):
    """The live flavors: public id -> name."""

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return FLAVOR_CATALOG_ID

    @event("FlavorCatalogCreated")
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    @event("FlavorListed")
    def list_flavor(self, flavor_id: str, name: str) -> None:
        self.names[flavor_id] = name

    @event("FlavorUnlisted")
    def unlist_flavor(self, flavor_id: str) -> None:
        self.names.pop(flavor_id, None)


def create_flavor(
    repo: Repository, *, name: str, vcpus: int, memory_mb: int, disk_gb: int,
    user: str, request_id: str, flavor_id: str | None = None, ephemeral_gb: int = 0,
    swap_mb: int = 0, is_public: bool = True, description: str | None = None,
    extra_specs: dict[str, str] | None = None,
) -> Flavor:
    """Record a new flavor; Conflict when its name or id is a live flavor's."""
    if not name.strip() or (flavor_id is not None and not flavor_id.strip()):
        raise UsageError("a flavor's name and id must not be empty")
    _check_sizes(vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
                 ephemeral_gb=ephemeral_gb, swap_mb=swap_mb)
    catalog = find(repo, FLAVOR_CATALOG_ID, FlavorCatalog) or FlavorCatalog()
    if name in catalog.names.values():
        raise Conflict(f"Flavor with name {name} already exists.")
    if flavor_id is not None and flavor_id in catalog.names:
        raise Conflict(f"Flavor with ID {flavor_id} already exists.")
    fields: dict[str, Any] = dict(
        flavor_id=flavor_id, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
        ephemeral_gb=ephemeral_gb, swap_mb=swap_mb, is_public=is_public,
        description=description, extra_specs=extra_specs or {}, user=user,
        request_id=request_id)
    flavor = find(repo, flavor_id_for(name), Flavor)
    if flavor is None:
        flavor = Flavor(name=name, **fields)
    else:  # deleted (a live one is in the catalog)
        flavor.redefine(**fields)
    if flavor.flavor_id in catalog.names:  # the default id: a UUID, so only a typed one
        raise Conflict(f"Flavor with ID {flavor.flavor_id} already exists.")
    catalog.list_flavor(flavor_id=flavor.flavor_id, name=name)
    try:
        repo.save(flavor, catalog)
    except RecordConflict:
        raise Conflict(f"another request created or deleted a flavor {name} first") from None
    return flavor


def delete_flavor(repo: Repository, ref: str, user: str, request_id: str) -> Flavor:
    flavor = resolve_flavor(repo, ref)
    catalog = find(repo, FLAVOR_CATALOG_ID, FlavorCatalog) or FlavorCatalog()
    flavor.delete(user=user, request_id=request_id)
    catalog.unlist_flavor(flavor_id=flavor.flavor_id)
    try:
        repo.save(flavor, catalog)
    except RecordConflict:
        raise Conflict(f"another request changed flavor {flavor.name} first") from None
    return flavor


def resolve_flavor(repo: Repository, ref: str) -> Flavor:
    """FLAVOR is a live flavor's id or name."""
    catalog = find(repo, FLAVOR_CATALOG_ID, FlavorCatalog)
    name = catalog.names.get(ref, ref) if catalog is not None else ref
    flavor = find(repo, flavor_id_for(name), Flavor)
    if flavor is None or flavor.deleted:
        raise NotFound(f"Flavor {ref} could not be found.")
    return flavor


def all_flavors(repo: Repository) -> list[Flavor]:
    """The live flavors, ordered by name."""
    catalog = find(repo, FLAVOR_CATALOG_ID, FlavorCatalog)
    names = sorted(catalog.names.values()) if catalog is not None else []
    return [f for name in names if (f := find(repo, flavor_id_for(name), Flavor))]


def _check_sizes(**sizes: int) -> None:
    """vcpus and memory at least 1; the disks and swap may be 0 (as Nova allows)."""
    for key, value in sizes.items():
        least = 1 if key in ("vcpus", "memory_mb") else 0
        if value < least:
            raise UsageError(f"--{key.replace('_', '-')} must be {least} or more, not {value}")
