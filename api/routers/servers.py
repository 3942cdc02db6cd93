"""`/v2.1/servers`: list (with Nova's filters and paging), detail, show, delete.

A server of another project is 404 (Nova does not reveal that it exists); so is a name
where an id belongs, which makes the client search `servers/detail?name=` instead.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Query, Request, Response

from api import policy, views
from api.deps import Call, CallDep
from api.errors import bad_request, not_found
from application import lifecycle, queries
from domain.errors import NotFound

router = APIRouter(prefix="/v2.1", tags=["servers"])
MAX_LIMIT = 1000  # Nova's osapi_max_limit


def find_server(call: Call, server_id: str) -> dict[str, Any]:
    """The caller's live server with this id, or 404 (another project's too, unless
    admin)."""
    missing = not_found(f"Instance {server_id} could not be found.")
    try:
        uuid.UUID(server_id)
        view = queries.show_instance(call.ctx, server_id)
    except (ValueError, NotFound):
        raise missing from None
    if view["vm_state"] == "deleted":
        raise missing
    if views.project_of(view) != call.caller.project_id and not call.caller.is_admin:
        raise missing
    return view


def authorize_on(call: Call, rule: str, view: dict[str, Any]) -> None:
    call.authorize(rule, views.project_of(view))


def _filters(call: Call, request: Request, limit: int | None, marker: str | None,
             all_tenants: str | None, detail: bool) -> queries.ServersQuery:
    params = request.query_params
    project: str | None = call.caller.project_id
    if all_tenants is not None and all_tenants.lower() not in ("0", "false", "off", "no"):
        call.authorize(policy.DETAIL_ALL_TENANTS if detail else policy.INDEX_ALL_TENANTS)
        project = params.get("project_id") or params.get("tenant_id")
    name = params.get("name")
    if name is not None:
        try:
            re.compile(name)
        except re.error:
            raise bad_request(f"Invalid regular expression for name: {name}") from None
    host = params.get("host") if call.allows(policy.ALLOW_ALL_FILTERS) else None
    if limit is not None and limit < 0:
        raise bad_request("Invalid input for field/attribute limit.")
    status = params.get("status")
    return queries.ServersQuery(
        project=project, name=name, status=status.upper() if status else None, host=host,
        limit=min(limit if limit is not None else MAX_LIMIT, MAX_LIMIT), marker=marker)


def _page(call: Call, wanted: queries.ServersQuery) -> list[dict[str, Any]]:
    try:
        return queries.servers_page(call.ctx, wanted)
    except NotFound:
        raise bad_request(f"marker [{wanted.marker}] not found") from None


def _next_link(call: Call, request: Request, found: list[dict[str, Any]],
               wanted: queries.ServersQuery, path: str) -> dict[str, Any]:
    if not found or len(found) < wanted.limit:
        return {}
    params = dict(request.query_params)
    params.update(limit=str(wanted.limit), marker=found[-1]["id"])
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return {"servers_links": [{"rel": "next", "href": f"{call.base}/v2.1/{path}?{query}"}]}


@router.get("/servers")
def list_servers(call: CallDep, request: Request, limit: int | None = Query(None),
                 marker: str | None = Query(None),
                 all_tenants: str | None = Query(None)) -> dict[str, Any]:
    call.authorize(policy.INDEX)
    wanted = _filters(call, request, limit, marker, all_tenants, detail=False)
    found = _page(call, wanted)
    return {"servers": [views.server_summary(view, call.base) for view in found],
            **_next_link(call, request, found, wanted, "servers")}


@router.get("/servers/detail")
def list_servers_detail(call: CallDep, request: Request, limit: int | None = Query(None),
                        marker: str | None = Query(None),
                        all_tenants: str | None = Query(None)) -> dict[str, Any]:
    call.authorize(policy.DETAIL)
    wanted = _filters(call, request, limit, marker, all_tenants, detail=True)
    found = _page(call, wanted)
    host_attributes = call.allows(policy.SERVER_ATTRIBUTES)
    return {"servers": [views.server_detail(view, call.version, call.base, host_attributes)
                        for view in found],
            **_next_link(call, request, found, wanted, "servers/detail")}


@router.get("/servers/{server_id}")
def show_server(call: CallDep, server_id: str) -> dict[str, Any]:
    view = find_server(call, server_id)
    authorize_on(call, policy.SHOW, view)
    host_attributes = call.allows(policy.SERVER_ATTRIBUTES, views.project_of(view))
    return {"server": views.server_detail(view, call.version, call.base, host_attributes)}


@router.delete("/servers/{server_id}", status_code=204, response_class=Response)
def delete_server(call: CallDep, server_id: str) -> Response:
    view = find_server(call, server_id)
    authorize_on(call, policy.DELETE, view)
    lifecycle.request(call.ctx, call.caller, "delete", view["id"],
                      request_id=call.request_id)
    return Response(status_code=204)
