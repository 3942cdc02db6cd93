"""`/v2.1/flavors`: list, detail, show (anyone authenticated); create, delete (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api import policy
from api.deps import Call, CallDep
from api.errors import not_found
from api.views import links
from application import flavors, queries
from domain.errors import NotFound

router = APIRouter(prefix="/v2.1", tags=["flavors"])

class NewFlavor(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    # name and id: application/validation.py's flavor_name and flavor_id (a 400)
    name: str = Field(min_length=1, max_length=255)
    vcpus: int = Field(ge=1, le=2**31 - 1)
    ram: int = Field(ge=1, le=2**31 - 1)
    disk: int = Field(ge=0, le=2**31 - 1)
    id: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=65535)
    ephemeral: int = Field(default=0, ge=0, le=2**31 - 1,
                           alias="OS-FLV-EXT-DATA:ephemeral")
    swap: int = Field(default=0, ge=0, le=2**31 - 1)
    is_public: bool = Field(default=True, alias="os-flavor-access:is_public")


    @field_validator("vcpus", "ram", "disk", "ephemeral", "swap", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # Nova's schema: an integer or a string of digits; pydantic would take true as 1.
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value


class NewFlavorBody(BaseModel):
    flavor: NewFlavor


def flavor_summary(call: Call, flavor: dict[str, Any]) -> dict[str, Any]:
    body = {"id": flavor["id"], "name": flavor["name"],
            "links": links(call.base, f"flavors/{flavor['id']}")}
    if call.version.at_least("2.55"):
        body["description"] = flavor["description"]
    return body


def flavor_detail(call: Call, flavor: dict[str, Any]) -> dict[str, Any]:
    body = {**flavor_summary(call, flavor), "vcpus": flavor["vcpus"],
            "ram": flavor["memory_mb"], "disk": flavor["disk_gb"],
            "swap": flavor["swap_mb"] or (0 if call.version.at_least("2.75") else ""),
            "OS-FLV-EXT-DATA:ephemeral": flavor["ephemeral_gb"],
            "OS-FLV-DISABLED:disabled": False,
            "os-flavor-access:is_public": flavor["is_public"], "rxtx_factor": 1.0}
    if call.version.at_least("2.61"):
        body["extra_specs"] = flavor["extra_specs"]
    return body


def find_flavor(call: Call, flavor_id: str) -> dict[str, Any]:
    missing = not_found(f"Flavor {flavor_id} could not be found.")
    try:
        flavor = queries.show_flavor(call.ctx, flavor_id)
    except NotFound:
        raise missing from None
    if flavor["id"] != flavor_id:  # a name: 404, so the client searches the list
        raise missing
    return flavor


def _listed(call: Call, limit: int | None, marker: str | None) -> list[dict[str, Any]]:
    found = sorted(queries.list_flavors(call.ctx), key=lambda f: (f["memory_mb"], f["id"]))
    if marker is not None:
        ids = [f["id"] for f in found]
        if marker not in ids:
            raise not_found(f"Marker {marker} could not be found.")
        found = found[ids.index(marker) + 1:]
    return found[:limit] if limit is not None else found


@router.get("/flavors")
def list_flavors(call: CallDep, limit: int | None = Query(None, ge=0),
                 marker: str | None = Query(None)) -> dict[str, Any]:
    return {"flavors": [flavor_summary(call, f) for f in _listed(call, limit, marker)]}


@router.get("/flavors/detail")
def list_flavors_detail(call: CallDep, limit: int | None = Query(None, ge=0),
                        marker: str | None = Query(None),
                        is_public: str | None = Query(None)) -> dict[str, Any]:
    return {"flavors": [flavor_detail(call, f) for f in _listed(call, limit, marker)]}


@router.get("/flavors/{flavor_id}")
def show_flavor(call: CallDep, flavor_id: str) -> dict[str, Any]:
    return {"flavor": flavor_detail(call, find_flavor(call, flavor_id))}


@router.post("/flavors")
def create_flavor(call: CallDep, body: Annotated[NewFlavorBody, Body()]) -> dict[str, Any]:
    call.authorize(policy.FLAVOR_CREATE)
    new = body.flavor
    flavor = flavors.create_flavor(
        call.ctx, call.caller, name=new.name, vcpus=new.vcpus, memory_mb=new.ram,
        disk_gb=new.disk, flavor_id=new.id, ephemeral_gb=new.ephemeral, swap_mb=new.swap,
        is_public=new.is_public, description=new.description)
    return {"flavor": flavor_detail(call, flavor)}


@router.delete("/flavors/{flavor_id}", status_code=202, response_class=Response)
def delete_flavor(call: CallDep, flavor_id: str) -> Response:
    call.authorize(policy.FLAVOR_DELETE)
    flavor = find_flavor(call, flavor_id)
    flavors.delete_flavor(call.ctx, call.caller, flavor["id"])
    return Response(status_code=202)
