"""Recording requests: hosts, boots, instance actions and image imports.

Each call takes plain values and the caller, records what was asked (nothing here waits
for a hypervisor: `serve` performs the requests) and returns plain data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from application import validation
from application.bootstrap import Context
from application.identity import Caller
from domain import host_removal
from domain.errors import NotFound, ShelfError, UsageError
from domain.flavor import resolve_flavor
from domain.host import STORAGE_MODES, VIRT_TYPES
from domain.ports import HypervisorError
from domain.service import new_request_id
from projections.audit import event_record
from projections.views import host_view

# The actions `request` accepts: Nova's names (the CLI's `shelve-offload` is shelveOffload).
ACTIONS = ("shelve", "shelveOffload", "unshelve", "start", "stop", "pause", "unpause",
           "suspend", "resume", "delete")


@dataclass(frozen=True)
class Recorded:
    """A recorded request: the instance it is about and the request id its events carry."""

    instance_id: str
    request_id: str


def add_host(
    ctx: Context, caller: Caller, name: str, uri: str, vcpus: int | None = None,
    memory_mb: int | None = None, disk_gb: int | None = None,
    connect_timeout: float | None = None, virt_type: str = "auto", storage: str = "auto",
) -> dict[str, Any]:
    """Register a libvirt host (or a removed one's name again); a capacity not given is
    what libvirt reports, asked within `connect_timeout` (None: the environment's).
    `virt_type` is kvm, qemu (TCG) or auto (see LibvirtHost._detect_virt_type); `storage`
    auto records the best strategy the host's disks directory and the image store allow
    (reflink, link or copy: adapters/disk_files.py), copy forces the copy."""
    if virt_type not in VIRT_TYPES:
        raise UsageError(f"virt type must be one of {', '.join(VIRT_TYPES)}, not {virt_type}")
    if storage not in STORAGE_MODES:
        raise UsageError(f"storage must be one of {', '.join(STORAGE_MODES)}, not {storage}")
    validation.name("host", name)
    validation.libvirt_uri(uri)
    ctx.identify()
    vcpus, memory_mb, disk_gb = _capacity(ctx, name, uri, vcpus, memory_mb, disk_gb,
                                          connect_timeout)
    strategy = _storage(ctx, name, uri, storage)
    host = ctx.service.add_host(name, uri, vcpus, memory_mb, disk_gb, caller.user_name,
                                new_request_id(), virt_type=virt_type, storage=strategy)
    return host_view(host)


def _storage(ctx: Context, name: str, uri: str, mode: str) -> str:
    from adapters.disk_files import DiskFileError
    from adapters.libvirt_host import choose_storage  # libvirt loads only when needed

    try:
        return choose_storage(name, uri, ctx.data_dir, ctx.identify(), ctx.images.root, mode)
    except DiskFileError as error:  # a probe the filesystem refused for another reason
        raise ShelfError(f"host {name}: try its storage: {error}") from None
    except OSError as error:  # e.g. a data directory it may not write: one line
        raise ShelfError(f"host {name}: prepare its disks directory: "
                         f"{error.strerror or error}: {error.filename}") from None


def _capacity(
    ctx: Context, name: str, uri: str, vcpus: int | None, memory_mb: int | None,
    disk_gb: int | None, connect_timeout: float | None,
) -> tuple[int, int, int]:
    # On the local libvirtd (or when asking it for the capacity) the host's pool is made
    # now: one that another store or data directory already uses is refused, in one line.
    local = uri.startswith("qemu:///")
    if vcpus is not None and memory_mb is not None and disk_gb is not None and not local:
        return vcpus, memory_mb, disk_gb
    from adapters.libvirt_connection import ConnectionBounds  # libvirt loads only when needed
    from adapters.libvirt_host import open_host

    bounds = ConnectionBounds.from_env(connect_timeout=connect_timeout)
    try:
        driver = open_host(name, uri, ctx.data_dir, bounds, mark=ctx.identify())
        try:
            capacity = driver.capacity()
        finally:
            driver.close()
    except HypervisorError as error:  # unreachable, or refused: one line, nothing recorded
        raise ShelfError(str(error)) from None
    return (vcpus or capacity.vcpus, memory_mb or capacity.memory_mb,
            disk_gb or capacity.disk_gb)


def remove_host(ctx: Context, caller: Caller, name: str, force: bool) -> list[dict[str, str]]:
    """Unregister a host (refused while instances hold claims there); with `force`, those
    instances are deleted without it: their id and name."""
    deleted = host_removal.remove_host(ctx.repo, name, force, caller.user_name,
                                       new_request_id())
    return [{"id": str(instance.id), "name": instance.name} for instance in deleted]


def boot(
    ctx: Context, caller: Caller, *, name: str, flavor: str | None = None,
    vcpus: int | None = None, memory_mb: int | None = None, disk_gb: int | None = None,
    host: str | None = None, image: str | None = None, volume_backed: bool = False,
    request_id: str | None = None,
) -> Recorded:
    """Record a boot in the caller's project, sized by a flavor (id or name), by explicit
    sizes, or both (an explicit size wins over the flavor's, e.g. a volume's size over a
    flavor's disk 0). `host` None: the worker places it (the host with the most free
    memory); `image`: an image's name or id (None: a blank root disk)."""
    _check_boot(name, vcpus, memory_mb, disk_gb, host, image, flavor)
    ctx.identify()
    image_id = None
    if image:
        found = ctx.images.find(image)
        if found is None:
            raise NotFound(f"no such image: {image}")
        image_id = found.id
    vcpus, memory_mb, disk_gb, copy = _sized(ctx, flavor, vcpus, memory_mb, disk_gb)
    request_id = request_id or new_request_id()
    instance = ctx.service.boot(
        name=name, host=host, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
        image_id=image_id, volume_backed=volume_backed, user=caller.user_name,
        request_id=request_id, project_id=caller.project_id, user_id=caller.user_id,
        flavor=copy,
    )
    return Recorded(str(instance.id), request_id)


def _check_boot(name: str, vcpus: int | None, memory_mb: int | None, disk_gb: int | None,
                *references: str | None) -> None:
    """The boundary's checks (application/validation.py), here as well as in the CLI, so
    every entrypoint's boot is held to them before anything is recorded."""
    validation.name("instance", name, "name")
    for field, value in (("vcpus", vcpus), ("memory_mb", memory_mb), ("disk_gb", disk_gb)):
        if value is not None:
            validation.size(value, field)
    for reference in references:
        if reference is not None:
            validation.reference(reference, "reference")


def _sized(
    ctx: Context, flavor: str | None, vcpus: int | None, memory_mb: int | None,
    disk_gb: int | None,
) -> tuple[int, int, int, dict[str, Any] | None]:
    """(vcpus, memory MB, disk GB, the flavor's copy or None)."""
    if flavor is None:
        if vcpus is None or memory_mb is None or disk_gb is None:
            raise UsageError("a boot needs --flavor, or --vcpus, --memory-mb and --disk-gb")
        return vcpus, memory_mb, disk_gb, None
    found = resolve_flavor(ctx.repo, flavor)
    return (_given(vcpus, found.vcpus), _given(memory_mb, found.memory_mb),
            _given(disk_gb, found.disk_gb), found.snapshot())


def _given(explicit: int | None, default: int) -> int:
    return default if explicit is None else explicit


def request(
    ctx: Context, caller: Caller, action: str, instance: str, host: str | None = None,
    request_id: str | None = None, project: str | None = None,
) -> Recorded:
    """Record one of ACTIONS on an instance (id or name); `host` only for unshelve. With
    `project`, only an instance of that project (another's is NotFound, as in Nova)."""
    if action not in ACTIONS:
        raise UsageError(f"no such action: {action}")
    if host is not None and action != "unshelve":
        raise UsageError(f"a host is chosen only by unshelve, not by {action}")
    validation.reference(instance, "instance")
    if host is not None:
        validation.reference(host, "host")
    request_id = request_id or new_request_id()
    recorded = ctx.service.request(action, instance, caller.user_name, request_id, host,
                                   project)
    return Recorded(str(recorded.id), request_id)


def left_without_host(ctx: Context, recorded: Recorded) -> list[dict[str, Any]]:
    """What the request left on a host it could not reach (a delete's `LeftOnHost`)."""
    events = ctx.app.events.get(uuid.UUID(recorded.instance_id))
    records = (event_record(event) for event in events)
    return [record for record in records
            if record["event"] == "LeftOnHost" and record["request_id"] == recorded.request_id]


def import_image(ctx: Context, name: str, source: Path) -> dict[str, Any]:
    """Copy a qcow2 or raw file into the image store; the image's fields."""
    if not source.is_file():
        raise NotFound(f"no such file: {source}")
    ctx.identify()
    try:
        info = ctx.images.import_file(name, source)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return dict(vars(info))
