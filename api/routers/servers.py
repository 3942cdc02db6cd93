"""`/v2.1/servers`: list (with Nova's filters and paging), detail, show, delete.

A server of another project is 404 (Nova does not reveal that it exists); so is a name
where an id belongs, which makes the client search `servers/detail?name=` instead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response

from api import policy, views
from api.deps import Call, CallDep
from api.errors import bad_request, not_found
from application import lifecycle, queries
from domain.errors import NotFound

router = APIRouter(prefix="/v2.1", tags=["servers"])
MAX_LIMIT = 1000  # Nova's osapi_max_limit
TRUE_STRINGS = frozenset({"1", "t", "true", "on", "y", "yes"})  # oslo's bool_from_string


def find_server(call: Call, server_id: str) -> dict[str, Any]:
    """The caller's live server with this id, or 404 (another project's too, unless
    admin)."""
    missing = not_found(f"Instance {server_id} could not be found.")
    try:
        uuid.UUID(server_id)
        view = queries.current_instance(call.ctx, server_id)
    except (ValueError, NotFound):
        raise missing from None
    if view["vm_state"] == "deleted":
        raise missing
    if views.project_of(view) != call.caller.project_id and not call.caller.is_admin:
        raise missing
    return view


def authorize_on(call: Call, rule: str, view: dict[str, Any]) -> None:
    call.authorize(rule, views.project_of(view))


@dataclass
class ListParams:
    """Nova's list filters; others (Nova has many) are ignored, as Nova ignores those a
    caller may not use."""

    limit: int | None = Query(None, ge=0)
    marker: str | None = Query(None)
    all_tenants: str | None = Query(None)
    name: str | None = Query(None, description="a regular expression")
    status: str | None = Query(None)
    host: str | None = Query(None, description="admin only")
    project_id: str | None = Query(None, description="with all_tenants")
    deleted: str | None = Query(None, description="admin only: true lists deleted servers")


def _filters(call: Call, params: ListParams, detail: bool) -> queries.InstanceFilter:
    project: str | None = call.caller.project_id
    if params.all_tenants is not None and params.all_tenants.lower() not in (
            "0", "false", "off", "no"):
        call.authorize(policy.DETAIL_ALL_TENANTS if detail else policy.INDEX_ALL_TENANTS)
        project = params.project_id
    limit = min(params.limit or MAX_LIMIT, MAX_LIMIT)  # 0 is none given, as in Nova
    every_filter = call.allows(policy.ALLOW_ALL_FILTERS)  # else dropped, as Nova drops them
    deleted = every_filter and params.deleted is not None and (
        params.deleted.strip().lower() in TRUE_STRINGS)
    status = params.status.upper() if params.status else None
    return queries.InstanceFilter(
        project_id=project, name=params.name,
        status=status or ("DELETED" if deleted else None), include_deleted=deleted,
        host=params.host if every_filter else None,
        newest_first=True, limit=limit, marker=params.marker)


def _listing(call: Call, request: Request, params: ListParams, detail: bool
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A page of servers, and `servers_links` to the next one when the page is full."""
    wanted = _filters(call, params, detail)
    try:
        found = queries.list_instances(call.ctx, wanted)
    except NotFound:
        raise bad_request(f"marker [{wanted.marker}] not found") from None
    if not found or len(found) < wanted.limit:
        return found, {}
    query = urlencode({**request.query_params, "limit": wanted.limit,
                       "marker": found[-1]["id"]})
    href = f"{call.base}{request.url.path}?{query}"
    return found, {"servers_links": [{"rel": "next", "href": href}]}


@router.get("/servers")
def list_servers(call: CallDep, request: Request,
                 params: Annotated[ListParams, Depends()]) -> dict[str, Any]:
    call.authorize(policy.INDEX)
    found, more = _listing(call, request, params, detail=False)
    return {"servers": [views.server_summary(view, call.base) for view in found], **more}


@router.get("/servers/detail")
def list_servers_detail(call: CallDep, request: Request,
                        params: Annotated[ListParams, Depends()]) -> dict[str, Any]:
    call.authorize(policy.DETAIL)
    found, more = _listing(call, request, params, detail=True)
    host_attributes = call.allows(policy.SERVER_ATTRIBUTES)
    statuses = _host_statuses(call, found)
    return {"servers": [views.server_detail(view, call.version, call.base, host_attributes,
                                            listed=True, host_status=statuses.get(view["id"]))
                        for view in found], **more}


def _host_statuses(call: Call, found: list[dict[str, Any]]) -> dict[str, str]:
    """Each server's host_status, for those policy lets the caller see it of (2.16)."""
    if not call.version.at_least("2.16"):
        return {}
    shown = [view for view in found if call.allows(policy.HOST_STATUS, views.project_of(view))]
    served = queries.served_hosts(call.ctx, {view["host"] for view in shown if view["host"]})
    return {view["id"]: views.host_status(view, served) for view in shown}


@router.get("/servers/{server_id}")
def show_server(call: CallDep, server_id: str) -> dict[str, Any]:
    view = find_server(call, server_id)
    authorize_on(call, policy.SHOW, view)
    host_attributes = call.allows(policy.SERVER_ATTRIBUTES, views.project_of(view))
    status = _host_statuses(call, [view]).get(view["id"])
    return {"server": views.server_detail(view, call.version, call.base, host_attributes,
                                          host_status=status)}


@router.delete("/servers/{server_id}", status_code=204, response_class=Response)
def delete_server(call: CallDep, server_id: str) -> Response:
    view = find_server(call, server_id)
    authorize_on(call, policy.DELETE, view)
    lifecycle.request(call.ctx, call.caller, "delete", view["id"],
                      request_id=call.request_id)
    return Response(status_code=204)
