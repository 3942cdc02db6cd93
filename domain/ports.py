"""The ports the process manager needs from the outside world (implemented in adapters/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# Power states as lifecycle.md names them.
RUNNING = "running"
PAUSED = "paused"
SHUTDOWN = "shutdown"
SUSPENDED = "suspended"
NOSTATE = "nostate"

# How a power-off ended (PoweredOff's `shutdown`): the guest shut down on the ACPI request;
# it was destroyed when the clean-shutdown timeout ran out; it was destroyed at once
# (timeout 0, or a paused or crashed guest can't act on ACPI); it was off already.
CLEAN = "clean"
TIMED_OUT = "destroyed-after-timeout"
FORCED = "destroyed"
ALREADY_OFF = "off"


class HypervisorError(Exception):
    """A hypervisor-side step failed; the message is what the operator sees."""


class HostUnreachable(HypervisorError):
    """The host's hypervisor can't be reached, or stopped answering, within the bounds
    (connect timeout, keepalive): a delete then goes on without it (Nova's local delete)."""


class ImageNotFound(HypervisorError):
    """The image a step needs is not in the image store."""


@dataclass(frozen=True)
class Capacity:
    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class DomainSpec:
    """What a host needs to define an instance's domain."""

    instance_id: str
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    mac: str
    ip: str
    volume_path: str | None = None  # set for a volume-backed instance: the root disk
    machine: str | None = None  # the machine type recorded at its first spawn, if any


class HostDriver(Protocol):
    """One hypervisor host. Every method is idempotent: it checks the real state first."""

    name: str
    uri: str

    def capacity(self) -> Capacity: ...

    def power_state(self, instance_id: str) -> str | None:
        """The domain's power state, or None when no domain is defined."""

    def has_disk(self, instance_id: str) -> bool: ...

    def create_disk(self, spec: DomainSpec, image_path: Path | None) -> None:
        """Create the local root disk, blank or a full copy of image_path (qcow2 or raw)."""

    def delete_disk(self, instance_id: str) -> None: ...

    def export_disk(self, instance_id: str, dest: Path) -> int:
        """Copy the powered-off local root disk to dest as qcow2; return its size in bytes."""

    def create_volume(self, path: Path, size_gb: int, image_path: Path | None) -> None:
        """Create a persistent volume file at path (shared storage), blank or from an image."""

    def define_and_start(self, spec: DomainSpec) -> str | None:
        """Returns the domain's machine type as the host resolved it (None if it has none)."""

    def power_on(self, instance_id: str) -> None: ...

    def power_off(self, instance_id: str, clean_timeout: float, retry_interval: float) -> str:
        """Ask for an ACPI shutdown, re-ask every retry_interval, destroy after clean_timeout.
        clean_timeout 0 destroys at once. Returns how it ended (CLEAN, TIMED_OUT, ...)."""

    def pause(self, instance_id: str) -> None: ...

    def unpause(self, instance_id: str) -> None: ...

    def suspend(self, instance_id: str) -> None: ...

    def resume(self, instance_id: str) -> None: ...

    def undefine(self, instance_id: str) -> None: ...

    def add_dhcp_host(self, mac: str, ip: str, name: str) -> None: ...

    def remove_dhcp_host(self, mac: str) -> None: ...

    def dhcp_hosts(self) -> dict[str, str]:
        """mac -> ip of every DHCP host entry in the shelf network but another store's."""

    def foreign_dhcp_hosts(self) -> dict[str, str]:
        """mac -> ip of the entries named with another store's tag."""

    def domains(self) -> list[str]:
        """Instance ids of every shelf domain defined on the host."""

    def disks(self) -> list[str]:
        """Instance ids of every local root disk on the host."""

    def partial_disks(self) -> list[str]:
        """Instance ids named by a hidden partial file of a disk (a clone or an unlinking a
        crash interrupted)."""

    def delete_partial_disk(self, instance_id: str) -> None:
        """Remove those partial files of the instance's disk (never the disk)."""

    def probe_files(self) -> dict[str, str]:
        """Storage probe files a killed `host add` left in its disks directory: name ->
        the store tag the name carries ("" for none)."""

    def delete_probe_file(self, name: str) -> None: ...

    def close(self) -> None: ...


class HostDrivers(Protocol):
    """Finds the driver of a host by name; hosts added later are found without a restart."""

    def driver(self, host: str) -> HostDriver: ...


@dataclass(frozen=True)
class ImageInfo:
    id: str
    name: str
    format: str
    size: int
    virtual_size: int
    created_at: str
    instance_id: str | None
    store_id: str | None = None  # the store that made it (None: made before stores had ids)


class ImageStore(Protocol):
    """Where images live, shared by every host."""

    def path_for(self, image_id: str) -> Path:
        """The file a step writes an image to before committing it."""

    def commit(self, image_id: str, name: str, instance_id: str | None) -> ImageInfo:
        """Mark a fully written file as a usable image (idempotent)."""

    def get(self, image_id: str) -> ImageInfo | None:
        """A committed image, or None (a partial file is not an image)."""

    def delete(self, image_id: str) -> None:
        """Remove the image and any partial file; no error when absent. An image another
        store made is refused (HypervisorError)."""

    def list(self) -> list[ImageInfo]: ...

    def probe_files(self) -> dict[str, str]:
        """Storage probe files a killed `host add` left: name -> its store tag ("": none)."""

    def delete_probe_file(self, name: str) -> None: ...


class VolumeStore(Protocol):
    """Persistent volumes, one per volume-backed instance, shared by every host."""

    def path_for(self, instance_id: str) -> Path: ...

    def exists(self, instance_id: str) -> bool: ...

    def delete(self, instance_id: str) -> None: ...


class Failpoints(Protocol):
    def hit(self, name: str) -> None:
        """Crash or raise if a failpoint of that name is set; otherwise nothing."""


class NoFailpoints:
    def hit(self, name: str) -> None:
        return None
