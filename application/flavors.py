"""Flavors: creating and deleting them (reading them is in `queries`)."""

from __future__ import annotations

from typing import Any

from application import validation
from application.bootstrap import Context
from application.identity import Caller
from domain import flavor as flavors
from domain.service import new_request_id


def create_flavor(
    ctx: Context, caller: Caller, *, name: str, vcpus: int, memory_mb: int, disk_gb: int,
    flavor_id: str | None = None, ephemeral_gb: int = 0, swap_mb: int = 0,
    is_public: bool = True, description: str | None = None,
    extra_specs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Record a flavor; its fields (`flavor_view`). `flavor_id` None: a UUID derived from
    the name. Conflict when a live flavor has the name or the id."""
    validation.flavor_name(name, "name")
    if flavor_id is not None:
        validation.flavor_id(flavor_id, "id")
    created = flavors.create_flavor(
        ctx.repo, name=name, vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb,
        user=caller.user_name, request_id=new_request_id(), flavor_id=flavor_id,
        ephemeral_gb=ephemeral_gb, swap_mb=swap_mb, is_public=is_public,
        description=description, extra_specs=extra_specs,
    )
    return flavor_view(created)


def delete_flavor(ctx: Context, caller: Caller, flavor: str) -> dict[str, Any]:
    """Delete a live flavor (id or name); what it was. Instances built from it keep their
    copy of it."""
    return flavor_view(flavors.delete_flavor(ctx.repo, flavor, caller.user_name,
                                             new_request_id()))


def flavor_view(flavor: flavors.Flavor) -> dict[str, Any]:
    return {
        "id": flavor.flavor_id, "name": flavor.name, "vcpus": flavor.vcpus,
        "memory_mb": flavor.memory_mb, "disk_gb": flavor.disk_gb,
        "ephemeral_gb": flavor.ephemeral_gb, "swap_mb": flavor.swap_mb,
        "is_public": flavor.is_public, "description": flavor.description,
        "extra_specs": dict(flavor.extra_specs),
    }
