"""How an aggregate looks in a read model: one dict per instance, one per host."""

from __future__ import annotations

import json
from typing import Any

from domain.host import Host
from domain.instance import Instance
from projections.base import utc_text as _iso


def instance_view(instance: Instance) -> dict[str, Any]:
    """Everything `show --json` prints."""
    return {
        "id": str(instance.id),
        "name": instance.name,
        "status": instance.status,
        "vm_state": instance.vm_state,
        "task_state": instance.task_state,
        "power_state": instance.power_state,
        "host": instance.host,
        "vcpus": instance.vcpus,
        "memory_mb": instance.memory_mb,
        "disk_gb": instance.disk_gb,
        "volume_backed": instance.volume_backed,
        "image_id": instance.image_id,
        "ip": instance.ip,
        "mac": instance.mac,
        "shelved_at": _iso(instance.shelved_at),
        "shelved_image_id": instance.shelved_image_id,
        "shelved_host": instance.shelved_host,
        "fault": instance.fault,
        "action": instance.action,
        "request_id": instance.request_id,
        "user": instance.user,
        "project_id": instance.project_id,
        "user_id": instance.user_id or instance.user,
        "flavor": instance.flavor,
        "created_at": _iso(instance.created_on),
        "updated_at": _iso(instance.modified_on),
        "version": instance.version,
    }


INSTANCE_COLUMNS = (
    "id", "name", "status", "vm_state", "task_state", "power_state", "host", "vcpus",
    "memory_mb", "disk_gb", "volume_backed", "image_id", "ip", "mac", "shelved_at",
    "shelved_image_id", "shelved_host", "fault", "action", "request_id", "user",
    "project_id", "user_id", "flavor", "created_at", "updated_at", "version",
)


JSON_COLUMNS = ("fault", "flavor")


def instance_row(view: dict[str, Any]) -> tuple[Any, ...]:
    row = dict(view)
    for column in JSON_COLUMNS:
        row[column] = json.dumps(view[column]) if view[column] is not None else None
    row["volume_backed"] = int(view["volume_backed"])
    return tuple(row[column] for column in INSTANCE_COLUMNS)


def instance_from_row(row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    for column in JSON_COLUMNS:
        view[column] = json.loads(row[column]) if row[column] else None
    view["volume_backed"] = bool(row["volume_backed"])
    return view


def host_view(host: Host) -> dict[str, Any]:
    used = host.used()
    return {
        "name": host.name, "uri": host.uri,
        "vcpus": host.vcpus, "memory_mb": host.memory_mb, "disk_gb": host.disk_gb,
        "vcpus_used": used["vcpus"], "memory_mb_used": used["memory_mb"],
        "disk_gb_used": used["disk_gb"], "storage": host.storage,
        "instances": len(host.claims),
    }


HOST_COLUMNS = (
    "name", "uri", "vcpus", "memory_mb", "disk_gb", "vcpus_used", "memory_mb_used",
    "disk_gb_used", "storage", "instances",
)
