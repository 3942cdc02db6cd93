"""`/v2.1/os-hypervisors`: shelf's hosts with their usage (admin)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter

from api import policy
from api.deps import Call, CallDep
from api.errors import not_found
from application import queries

router = APIRouter(prefix="/v2.1", tags=["hypervisors"])
HYPERVISOR_NAMESPACE = uuid.UUID("0b7e4f8e-3d6c-4f35-9a43-6f0d2b8d6c2e")


def hypervisor_id(name: str) -> str:
    """A stable UUID per host name (Nova's ids are UUIDs from 2.53)."""
    return str(uuid.uuid5(HYPERVISOR_NAMESPACE, name))


def _summary(host: dict[str, Any], served: set[str]) -> dict[str, Any]:
    """`state` is Nova's service state: up while some `serve` performs the host's steps."""
    return {"id": hypervisor_id(host["name"]), "hypervisor_hostname": host["name"],
            "state": "up" if host["name"] in served else "down", "status": "enabled"}


def _detail(call: Call, host: dict[str, Any], served: set[str]) -> dict[str, Any]:
    return {
        **_summary(host, served), "hypervisor_type": "QEMU", "hypervisor_version": 9000000,
        "host_ip": "127.0.0.1", "cpu_info": {} if call.version.at_least("2.28") else "{}",
        "vcpus": host["vcpus"], "vcpus_used": host["vcpus_used"],
        "memory_mb": host["memory_mb"], "memory_mb_used": host["memory_mb_used"],
        "free_ram_mb": host["memory_mb"] - host["memory_mb_used"],
        "local_gb": host["disk_gb"], "local_gb_used": host["disk_gb_used"],
        "free_disk_gb": host["disk_gb"] - host["disk_gb_used"],
        "disk_available_least": host["disk_gb"] - host["disk_gb_used"],
        "running_vms": host["instances"], "current_workload": 0,
        "service": {"host": host["name"], "id": hypervisor_id(host["name"]),
                    "disabled_reason": None},
    }


def _hosts(call: Call) -> tuple[list[dict[str, Any]], set[str]]:
    """The hosts, and those of them some `serve` performs the steps on (none, when that
    can't be told now: Nova's state has only up and down)."""
    hosts = queries.list_hosts(call.ctx)
    return hosts, queries.served_hosts(call.ctx, (host["name"] for host in hosts)) or set()


@router.get("/os-hypervisors")
def list_hypervisors(call: CallDep) -> dict[str, Any]:
    call.authorize(policy.HYPERVISORS_LIST)
    hosts, served = _hosts(call)
    return {"hypervisors": [_summary(host, served) for host in hosts]}


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(call: CallDep) -> dict[str, Any]:
    call.authorize(policy.HYPERVISORS_DETAIL)
    hosts, served = _hosts(call)
    return {"hypervisors": [_detail(call, host, served) for host in hosts]}


@router.get("/os-hypervisors/{hypervisor}")
def show_hypervisor(call: CallDep, hypervisor: str) -> dict[str, Any]:
    call.authorize(policy.HYPERVISORS_SHOW)
    hosts, served = _hosts(call)
    for host in hosts:
        if hypervisor in (hypervisor_id(host["name"]), host["name"]):
            return {"hypervisor": _detail(call, host, served)}
    raise not_found(f"Hypervisor with ID {hypervisor} could not be found.")
