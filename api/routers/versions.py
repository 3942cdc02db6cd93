"""Version documents (`/`, `/v2.1`): unauthenticated, every client reads them first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.microversion import MAX_VERSION, MIN_VERSION, text

router = APIRouter(tags=["versions"])
UPDATED = "2013-07-23T11:33:21Z"  # v2.1's date in Nova's documents


def _version(base: str) -> dict[str, Any]:
    return {"id": "v2.1", "status": "CURRENT", "version": text(MAX_VERSION),
            "min_version": text(MIN_VERSION), "updated": UPDATED,
            "links": [{"rel": "self", "href": f"{base}/v2.1/"}]}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/")
def versions(request: Request) -> dict[str, Any]:
    return {"versions": [_version(_base(request))]}


@router.get("/v2.1")
@router.get("/v2.1/", include_in_schema=False)
def version(request: Request) -> dict[str, Any]:
    document = _version(_base(request))
    document["links"].append({"rel": "describedby", "type": "text/html",
                              "href": "https://docs.openstack.org/"})
    document["media-types"] = [{"base": "application/json",
                                "type": "application/vnd.openstack.compute+json;version=2.1"}]
    return {"version": document}
