"""A Glance v2 subset under `/image`: list (`?name=`, `?id=in:…`) and show.

Imported images are public; a shelved image (`<name>-shelved`) belongs to its instance's
project and is shown to that project and to admins, with `image_type: snapshot` and
`instance_uuid`, as Nova's shelve snapshots are.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request

from api import views
from api.deps import Call, CallDep
from api.errors import bad_request, not_found
from application import queries
from domain.errors import NotFound

router = APIRouter(prefix="/image", tags=["images"])
GLANCE_VERSION = "v2.16"
DEFAULT_LIMIT, MAX_LIMIT = 25, 1000  # Glance's limit_param_default and api_limit_max


@router.get("")
@router.get("/", include_in_schema=False)
def image_versions(request: Request) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {"versions": [{"id": GLANCE_VERSION, "status": "CURRENT",
                          "links": [{"rel": "self", "href": f"{base}/image/v2/"}]}]}


def _owner(call: Call, image: dict[str, Any]) -> str | None:
    """The project of the instance a shelved image belongs to; None for a public one."""
    instance_id = image.get("instance_id")
    if not instance_id:
        return None
    try:
        return views.project_of(queries.show_instance(call.ctx, instance_id)) or None
    except NotFound:
        return None


def _visible(call: Call) -> list[tuple[dict[str, Any], str | None]]:
    listed = []
    for image in queries.list_images(call.ctx):
        owner = _owner(call, image)
        if owner is None or owner == call.caller.project_id or call.caller.is_admin:
            listed.append((image, owner))
    return listed


def _glance(image: dict[str, Any], owner: str | None) -> dict[str, Any]:
    created = views.timestamp(image["created_at"])
    body: dict[str, Any] = {
        "id": image["id"], "name": image["name"], "status": "active",
        "visibility": "public" if owner is None else "private", "protected": False,
        "os_hidden": False, "owner": owner, "size": image["size"],
        "virtual_size": image["virtual_size"], "disk_format": image["format"],
        "container_format": "bare", "min_ram": 0, "min_disk": 0, "checksum": None,
        "os_hash_algo": None, "os_hash_value": None, "created_at": created,
        "updated_at": created, "tags": [], "self": f"/v2/images/{image['id']}",
        "file": f"/v2/images/{image['id']}/file", "schema": "/v2/schemas/image",
    }
    if image.get("instance_id"):
        body.update(image_type="snapshot", instance_uuid=image["instance_id"])
    return body


@router.get("/v2/images")
def list_images(call: CallDep, request: Request) -> dict[str, Any]:
    name = request.query_params.get("name")
    ids = request.query_params.get("id")
    wanted_ids = set(ids[3:].split(",")) if ids and ids.startswith("in:") else (
        {ids} if ids else None)
    images = [_glance(image, owner) for image, owner in _visible(call)
              if (name is None or image["name"] == name)
              and (wanted_ids is None or image["id"] in wanted_ids)]
    page, more = _page(images, request.query_params.get("limit"),
                       request.query_params.get("marker"))
    body: dict[str, Any] = {"images": page, "first": "/v2/images",
                            "schema": "/v2/schemas/images"}
    if more and page:  # the same filters, after this page's last image
        following = {**request.query_params, "marker": page[-1]["id"], "limit": len(page)}
        body["next"] = f"/v2/images?{urlencode(following)}"
    return body


def _page(images: list[dict[str, Any]], limit: str | None,
          marker: str | None) -> tuple[list[dict[str, Any]], bool]:
    """Glance's paging: after the `marker` image, at most `limit` (400 for a bad one);
    and whether more follow."""
    if marker is not None:
        ids = [image["id"] for image in images]
        if marker not in ids:
            raise bad_request(f"Invalid marker. Image {marker} could not be found.")
        images = images[ids.index(marker) + 1:]
    if limit is not None and not limit.isdigit():
        raise bad_request("limit param must be an integer" if not limit.lstrip("-").isdigit()
                          else "limit param must be positive")
    most = min(int(limit), MAX_LIMIT) if limit is not None else DEFAULT_LIMIT
    return images[:most], len(images) > most


@router.get("/v2/images/{image_id}")
def show_image(call: CallDep, image_id: str) -> dict[str, Any]:
    for image, owner in _visible(call):
        if image["id"] == image_id:
            return _glance(image, owner)
    raise not_found(f"No image found with ID {image_id}")
