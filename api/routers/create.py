"""`POST /v2.1/servers`: a boot from a flavor and an image, or volume-backed through
`block_device_mapping_v2`. Recorded only (202); `serve` picks the host and boots."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api import policy
from api.deps import Call, CallDep
from api.errors import ApiError, bad_request
from api.routers.actions import AVAILABILITY_ZONES
from api.routers.flavors import find_flavor
from api.views import links
from application import lifecycle
from domain.errors import NotFound

router = APIRouter(prefix="/v2.1", tags=["servers"])


class BlockDevice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    boot_index: int | str | None = None
    uuid: str | None = Field(default=None, max_length=255)
    source_type: Literal["image", "volume", "blank", "snapshot"] | None = None
    destination_type: Literal["volume", "local"] | None = None
    volume_size: int | None = Field(default=None, ge=1, le=2**31 - 1)
    delete_on_termination: bool = False


class NewServer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=255)
    flavorRef: str = Field(min_length=1, max_length=255)  # Nova's field names
    imageRef: str | None = Field(default=None, max_length=255)
    block_device_mapping_v2: list[BlockDevice] | None = Field(default=None, max_length=16)
    availability_zone: str | None = Field(default=None, max_length=255)
    min_count: int = Field(default=1, ge=1, le=1)
    max_count: int = Field(default=1, ge=1, le=1)


class NewServerBody(BaseModel):
    server: NewServer


def _root_device(new: NewServer) -> BlockDevice | None:
    for device in new.block_device_mapping_v2 or ():
        if str(device.boot_index) == "0":
            return device
    return None


def _boot_source(new: NewServer) -> tuple[str | None, bool, int | None]:
    """(image, volume-backed, root disk GB or None for the flavor's) from imageRef and the
    root block device."""
    device = _root_device(new)
    if device is None or device.destination_type != "volume":
        if not new.imageRef:
            raise bad_request("Missing imageRef attribute")
        return new.imageRef, False, None
    if device.source_type == "image":
        image = device.uuid
    elif device.source_type == "blank":
        image = None
    else:
        raise bad_request(f"Block device source_type {device.source_type} is not supported: "
                          "shelf creates the volume itself, from an image or blank")
    return image, True, device.volume_size


def _flavor(call: Call, ref: str) -> dict[str, Any]:
    try:
        return find_flavor(call, ref.rstrip("/").rsplit("/", 1)[-1])
    except ApiError:
        raise bad_request(f"Flavor {ref} could not be found.") from None


@router.post("/servers", status_code=202)
def create_server(call: CallDep, body: Annotated[NewServerBody, Body()]) -> Response:
    call.authorize(policy.CREATE)
    new = body.server
    if new.availability_zone not in (None, *AVAILABILITY_ZONES):
        raise bad_request(f"The requested availability zone is not available: "
                          f"{new.availability_zone}")
    flavor = _flavor(call, new.flavorRef)
    image, volume_backed, disk_gb = _boot_source(new)
    if not (disk_gb or flavor["disk_gb"]):
        raise bad_request(f"Flavor {flavor['name']} has no disk: boot from a volume "
                          "(block_device_mapping_v2) with a volume_size")
    try:
        recorded = lifecycle.boot(
            call.ctx, call.caller, name=new.name, flavor=flavor["id"], disk_gb=disk_gb,
            image=image, volume_backed=volume_backed, request_id=call.request_id)
    except NotFound as error:  # the image: Nova answers 400 for a bad imageRef
        raise bad_request(f"Image {image} could not be found.") from error
    server_links = links(call.base, f"servers/{recorded.instance_id}")
    return JSONResponse(
        {"server": {"id": recorded.instance_id, "links": server_links,
                    "OS-DCF:diskConfig": "MANUAL", "security_groups": [{"name": "default"}]}},
        status_code=202, headers={"Location": server_links[0]["href"]})
