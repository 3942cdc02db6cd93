"""Recording requests: load the aggregate, apply the guarded request, save.

Nothing here touches a hypervisor: requests are recorded and return at once; the process
manager carries them out.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol, TypeVar

from domain.errors import Conflict, HostNotFound, NotFound, UsageError
from domain.host import CATALOG_ID, Host, HostCatalog, host_id_for
from domain.instance import LEGACY_PROJECT, Instance
from domain.limits import MAX_SIZE, NAME_RULE, is_valid_name, is_valid_size
from domain.registry import (
    BLOCKS,
    AddressBlock,
    NameIndex,
    address_block_id,
    first_block_for,
    mac_for,
    name_index_id,
    no_free_address,
)

A = TypeVar("A")
SAVE_ATTEMPTS = 5


class RecordConflict(Exception):
    """Raised by a repository when an aggregate's version was taken by another writer."""


class Repository(Protocol):
    def get(self, aggregate_id: uuid.UUID) -> Any:
        """The aggregate, or raise KeyError when it was never recorded."""

    def save(self, *aggregates: Any) -> None:
        """Record the aggregates' new events in one transaction, or raise RecordConflict."""


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def find(repo: Repository, aggregate_id: uuid.UUID, cls: type[A]) -> A | None:
    try:
        found = repo.get(aggregate_id)
    except KeyError:
        return None
    return found if isinstance(found, cls) else None


def resolve_instance(repo: Repository, ref: str, project: str | None = None) -> Instance:
    """INSTANCE is the id (UUID) or the unique name of a live instance; with `project`,
    one of that project's (another project's is not found, as Nova hides it)."""
    instance_id = _parse_uuid(ref)
    if instance_id is None:
        index = find(repo, name_index_id(ref), NameIndex)
        if index is not None and index.instance_id is not None:
            instance_id = uuid.UUID(index.instance_id)
    instance = find(repo, instance_id, Instance) if instance_id else None
    if instance is None or (project is not None and instance.project_id != project):
        raise NotFound(f"no such instance: {ref}")
    return instance


def resolve_host(repo: Repository, name: str) -> Host:
    host = find(repo, host_id_for(name), Host)
    if host is None or host.removed:
        raise HostNotFound(f"no such host: {name}")
    return host


def _parse_uuid(ref: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


class LifecycleService:
    def __init__(self, repo: Repository, address_start: int = 0) -> None:
        self.repo = repo
        self.address_start = address_start  # the store's first index in an address block

    def add_host(
        self, name: str, uri: str, vcpus: int, memory_mb: int, disk_gb: int,
        user: str, request_id: str, virt_type: str = "auto", storage: str = "copy",
    ) -> Host:
        host = find(self.repo, host_id_for(name), Host)
        if host is not None and not host.removed:
            raise Conflict(f"host {name} already exists")
        _require_positive(vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb)
        _require_name("host", name)
        if host is None:
            host = Host(name=name, uri=uri, vcpus=vcpus, memory_mb=memory_mb,
                        disk_gb=disk_gb, user=user, request_id=request_id,
                        virt_type=virt_type, storage=storage)
        else:  # removed once: the name comes back on the same aggregate
            host.add_again(uri, vcpus, memory_mb, disk_gb, user, request_id, virt_type,
                           storage)
        catalog = find(self.repo, CATALOG_ID, HostCatalog) or HostCatalog()
        catalog.register(name)
        try:
            self.repo.save(host, catalog)
        except RecordConflict:
            raise Conflict(f"host {name} already exists") from None
        return host

    def boot(
        self, *, name: str, host: str | None, vcpus: int, memory_mb: int, disk_gb: int,
        image_id: str | None, volume_backed: bool, user: str, request_id: str,
        project_id: str = LEGACY_PROJECT, user_id: str | None = None,
        flavor: dict[str, Any] | None = None,
    ) -> Instance:
        """`host` None: the worker places it (the host with the most free memory);
        `flavor`: a copy of the flavor the sizes came from."""
        _require_positive(vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb)
        _require_name("instance", name)
        if host is not None:
            resolve_host(self.repo, host)
        if _parse_uuid(name) is not None:
            raise UsageError("an instance name can't be a UUID (it would shadow instance ids)")
        for _ in range(SAVE_ATTEMPTS):  # a lost race is retried; the last loss is a Conflict
            index = find(self.repo, name_index_id(name), NameIndex)
            instance_id = uuid.uuid4()
            block, ip = self._allocate_address(instance_id)
            instance = Instance(
                id=instance_id, name=name, host=host, vcpus=vcpus, memory_mb=memory_mb,
                disk_gb=disk_gb, image_id=image_id, volume_backed=volume_backed, ip=ip,
                mac=mac_for(ip), user=user, request_id=request_id, project_id=project_id,
                user_id=user_id, flavor=flavor,
            )
            if index is None:
                index = NameIndex(name=name, instance_id=str(instance_id))
            else:
                index.take(str(instance_id))
            try:
                self.repo.save(instance, index, block)
                return instance
            except RecordConflict:
                continue
        raise Conflict(f"boot of {name} lost {SAVE_ATTEMPTS} races for its name or address")

    def _allocate_address(self, instance_id: uuid.UUID) -> tuple[AddressBlock, str]:
        first = first_block_for(instance_id)
        for offset in range(BLOCKS):
            number = (first + offset) % BLOCKS
            block = find(self.repo, address_block_id(number), AddressBlock)
            block = block or AddressBlock(block=number, first_index=self.address_start)
            ip = block.allocate(str(instance_id))
            if ip is not None:
                return block, ip
        raise no_free_address()

    def request(self, action: str, ref: str, user: str, request_id: str,
                host: str | None = None, project: str | None = None) -> Instance:
        """Record one request on an instance (of `project`, when given): exactly one of N
        racing requests wins."""
        instance = resolve_instance(self.repo, ref, project)
        if host is not None:
            resolve_host(self.repo, host)
        apply_request(instance, action, user, request_id, host)
        try:
            self.repo.save(instance)
        except RecordConflict:
            raise Conflict(
                f"Cannot '{action}' instance {instance.id}: another request changed it first"
            ) from None
        return instance


def apply_request(
    instance: Instance, action: str, user: str, request_id: str, host: str | None = None
) -> None:
    if action == "shelve":
        instance.request_shelve(user, request_id)
    elif action == "shelveOffload":
        instance.request_shelve_offload(user, request_id)
    elif action == "unshelve":
        instance.request_unshelve(user, request_id, host)
    elif action == "delete":
        instance.request_delete(user, request_id)
    else:
        instance.request_power(action, user, request_id)


def _require_positive(**values: int) -> None:
    """A second line behind application/validation.py: what no store could read back."""
    for key, value in values.items():
        if not is_valid_size(value):
            raise UsageError(f"--{key.replace('_', '-')} must be a whole number from 1 to "
                             f"{MAX_SIZE}, not {value!r}")


def _require_name(kind: str, name: str) -> None:
    if not is_valid_name(name):
        raise UsageError(f"bad {kind} name {name!r}: use {NAME_RULE}")


def all_hosts(repo: Repository) -> list[Host]:
    catalog = find(repo, CATALOG_ID, HostCatalog)
    names = catalog.names if catalog else []
    return [host for name in names
            if (host := find(repo, host_id_for(name), Host)) and not host.removed]
