"""Persistent volumes: one qcow2 file per volume-backed instance in a shared directory."""

from __future__ import annotations

from pathlib import Path

VOLUME_SUFFIX = ".qcow2"


class DirectoryVolumeStore:
    """Where volume-backed instances' root disks live (`<root>/<instance_id>.qcow2`).

    The host driver creates the files (`HostDriver.create_volume`); this store names,
    finds and deletes them.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id.startswith("."):
            raise ValueError(f"invalid instance id {instance_id!r}")
        return self.root / f"{instance_id}{VOLUME_SUFFIX}"

    def exists(self, instance_id: str) -> bool:
        return self.path_for(instance_id).is_file()

    def delete(self, instance_id: str) -> None:
        self.path_for(instance_id).unlink(missing_ok=True)

    def list(self) -> list[str]:
        return sorted(path.stem for path in self.root.glob(f"*{VOLUME_SUFFIX}"))
