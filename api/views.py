"""Nova's JSON for a server, per microversion, from the application layer's instance view.

The keys are exactly those tempest's response schemas expect at each microversion (they
refuse a missing or an extra key): see tests/api for the check.
"""

from __future__ import annotations

import hashlib
from typing import Any

from api.microversion import Microversion

NETWORK = "shelf"
AVAILABILITY_ZONE = "nova"
POWER_STATES = {"nostate": 0, "running": 1, "paused": 3, "shutdown": 4, "crashed": 6,
                "suspended": 7}


def timestamp(text: str | None) -> str | None:
    """Nova's form, `2026-12-04T18:42:42Z`, from the store's ISO 8601 UTC text."""
    if not text:
        return None
    return text[:19] + "Z"


def links(base: str, path: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{base}/v2.1/{path}"},
            {"rel": "bookmark", "href": f"{base}/{path}"}]


def server_summary(view: dict[str, Any], base: str) -> dict[str, Any]:
    return {"id": view["id"], "name": view["name"],
            "links": links(base, f"servers/{view['id']}")}


def host_id(project_id: str, host: str | None) -> str:
    """Nova's hostId: the host hashed with the project, so projects can't compare hosts."""
    if not host:
        return ""
    return hashlib.sha224(f"{project_id}{host}".encode()).hexdigest()


def server_detail(view: dict[str, Any], version: Microversion, base: str,
                  host_attributes: bool, listed: bool = False,
                  host_status: str | None = None) -> dict[str, Any]:
    """One server as show (or, `listed`, as a detail list) answers it; `host_status`
    (2.16, for whom policy lets see it) when given."""
    project = project_of(view)
    server: dict[str, Any] = {
        "id": view["id"], "name": view["name"], "status": view["status"],
        "tenant_id": project, "user_id": view["user_id"],
        "created": timestamp(view["created_at"]), "updated": timestamp(view["updated_at"]),
        "hostId": host_id(project, view["host"]),
        "flavor": _flavor(view, version, base), "image": _image(view, base),
        "addresses": _addresses(view), "metadata": {},
        "links": links(base, f"servers/{view['id']}"),
        "key_name": None, "security_groups": [{"name": "default"}],
        "accessIPv4": "", "accessIPv6": "", "OS-DCF:diskConfig": "MANUAL",
        "config_drive": "", "os-extended-volumes:volumes_attached": [],
        "OS-SRV-USG:launched_at": None, "OS-SRV-USG:terminated_at": None,
        "OS-EXT-AZ:availability_zone": AVAILABILITY_ZONE,
        "OS-EXT-STS:vm_state": view["vm_state"],
        "OS-EXT-STS:task_state": view["task_state"],
        "OS-EXT-STS:power_state": POWER_STATES.get(view["power_state"], 0),
    }
    if host_attributes:
        server["OS-EXT-SRV-ATTR:host"] = view["host"]
        server["OS-EXT-SRV-ATTR:hypervisor_hostname"] = view["host"]
        server["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{view['id']}"
    if view.get("fault"):
        server["fault"] = _fault(view, host_attributes)
    if host_status is not None and version.at_least("2.16"):
        server["host_status"] = host_status
    server.update(_by_version(version))
    if listed:  # from 2.71 server groups are shown by show only, as in Nova
        server.pop("server_groups", None)
    return server


def project_of(view: dict[str, Any]) -> str:
    project: str = view["project_id"]
    return project


def _by_version(version: Microversion) -> dict[str, Any]:
    added: dict[str, Any] = {}
    for since, key, value in ((("2.9"), "locked", False), ("2.19", "description", None),
                              ("2.26", "tags", []), ("2.63", "trusted_image_certificates", None),
                              ("2.71", "server_groups", []), ("2.73", "locked_reason", None),
                              ("2.96", "pinned_availability_zone", None)):
        if version.at_least(since):
            added[key] = value
    return added


def _flavor(view: dict[str, Any], version: Microversion, base: str) -> dict[str, Any]:
    flavor = view.get("flavor")
    if version.at_least("2.47"):  # the copy the instance keeps, or its own sizes
        flavor = flavor or {"name": f"{view['vcpus']}vcpu-{view['memory_mb']}mb-"
                            f"{view['disk_gb']}gb", "extra_specs": {}}
        return {"original_name": flavor["name"], "vcpus": view["vcpus"],
                "ram": view["memory_mb"], "disk": view["disk_gb"],
                "ephemeral": flavor.get("ephemeral_gb", 0), "swap": flavor.get("swap_mb", 0),
                "extra_specs": flavor.get("extra_specs", {})}
    if not flavor:
        return {}  # booted with explicit sizes: no flavor to point at (tempest allows {})
    return {"id": flavor["id"], "links": [links(base, f"flavors/{flavor['id']}")[1]]}


def _image(view: dict[str, Any], base: str) -> dict[str, Any] | str:
    if view["volume_backed"] or not view["image_id"]:
        return ""
    image_id = view["image_id"]
    return {"id": image_id, "links": [links(base, f"images/{image_id}")[1]]}


def _addresses(view: dict[str, Any]) -> dict[str, Any]:
    if not view["ip"]:
        return {}
    return {NETWORK: [{"version": 4, "addr": view["ip"], "OS-EXT-IPS:type": "fixed",
                       "OS-EXT-IPS-MAC:mac_addr": view["mac"]}]}


def _fault(view: dict[str, Any], admin: bool) -> dict[str, Any]:
    fault = view["fault"]
    body: dict[str, Any] = {"code": 500, "message": str(fault.get("message", "")),
                            "created": timestamp(view["updated_at"])}
    if admin:
        body["details"] = f"step {fault.get('step')} on host {fault.get('host')}"
    return body


def host_status(view: dict[str, Any], served: set[str] | None) -> str:
    """Nova's host_status: UP when a serve performs its host's steps, DOWN when none
    does, UNKNOWN when that can't be told now, "" for a server on no host."""
    if not view["host"]:
        return ""
    if served is None:
        return "UNKNOWN"
    return "UP" if view["host"] in served else "DOWN"
