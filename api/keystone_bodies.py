"""Keystone v3's documents, as clients expect them: version, token (with its catalog)
and error bodies. Pure functions of their inputs."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from application.auth.tokens import Token

DOMAIN = {"id": "default", "name": "Default"}
REGION = "RegionOne"
UPDATED = "2024-04-01T00:00:00Z"
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "title": TITLES[status]}}


def version_document(base: str) -> dict[str, Any]:
    return {"id": "v3.14", "status": "stable", "updated": UPDATED,
            "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.identity-v3+json"}]}


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def _stable_id(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def catalog(base: str) -> list[dict[str, Any]]:
    """compute (…/v2.1), image (…/image) and identity, public, RegionOne, at `base`."""
    services = (("compute", "nova", f"{base}/v2.1"), ("image", "glance", f"{base}/image"),
                ("identity", "keystone", f"{base}/identity"))
    return [{"type": kind, "name": name, "id": _stable_id(kind),
             "endpoints": [{"id": _stable_id(kind, "public"), "interface": "public",
                            "region": REGION, "region_id": REGION, "url": url}]}
            for kind, name, url in services]


def token_body(token: Token, base: str, with_catalog: bool = True) -> dict[str, Any]:
    identity = token.identity
    body: dict[str, Any] = {
        "methods": list(identity.methods),
        "user": {"id": identity.user_id, "name": identity.user_name, "domain": DOMAIN,
                 "password_expires_at": None},
        "audit_ids": [token.token_id[:22]],
        "expires_at": _stamp(token.expires_at),
        "issued_at": _stamp(token.issued_at),
        "project": {"id": identity.project_id, "name": identity.project_name,
                    "domain": DOMAIN},
        "is_domain": False,
        "roles": [{"id": _stable_id("role", role), "name": role} for role in identity.roles],
    }
    if identity.credential_id is not None:
        body["application_credential"] = {"id": identity.credential_id, "restricted": True}
    if with_catalog:
        body["catalog"] = catalog(base)
    return {"token": body}
