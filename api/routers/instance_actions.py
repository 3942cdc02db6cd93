"""`/v2.1/servers/{id}/os-instance-actions[/{request_id}]`: Nova's instance actions, from
the audit projection; request ids are those the API answered with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api import policy, views
from api.deps import Call, CallDep
from api.errors import not_found
from api.routers.servers import authorize_on, find_server
from application import queries

router = APIRouter(prefix="/v2.1", tags=["instance actions"])


def _action(call: Call, view: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    body = {
        "action": action["action"], "instance_uuid": view["id"],
        "request_id": action["request_id"], "user_id": action["user"] or "",
        "project_id": views.project_of(view),
        "start_time": views.timestamp(action["start_time"]), "message": action["message"],
    }
    if call.version.at_least("2.58"):
        body["updated_at"] = views.timestamp(action["finish_time"] or action["start_time"])
    return body


def _event(call: Call, view: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    project = views.project_of(view)
    body = {"event": event["event"], "start_time": views.timestamp(event["start_time"]),
            "finish_time": views.timestamp(event["finish_time"]), "result": event["result"]}
    if call.allows(policy.ACTION_EVENTS, project):
        body["traceback"] = None
    if call.version.at_least("2.62"):
        body["hostId"] = views.host_id(project, event["host"])
        if call.allows(policy.ACTION_EVENTS, project):
            body["host"] = event["host"] or ""
    if call.version.at_least("2.84") and call.allows(policy.ACTION_EVENT_DETAILS, project):
        body["details"] = event["details"]
    return body


@router.get("/servers/{server_id}/os-instance-actions")
def list_actions(call: CallDep, server_id: str) -> dict[str, Any]:
    view = find_server(call, server_id)
    authorize_on(call, policy.ACTIONS_LIST, view)
    found = queries.instance_actions(call.ctx, view["id"])
    return {"instanceActions": [_action(call, view, a) for a in reversed(found)]}


@router.get("/servers/{server_id}/os-instance-actions/{request_id}")
def show_action(call: CallDep, server_id: str, request_id: str) -> dict[str, Any]:
    view = find_server(call, server_id)
    authorize_on(call, policy.ACTIONS_SHOW, view)
    for action in queries.instance_actions(call.ctx, view["id"]):
        if action["request_id"] == request_id:
            body = _action(call, view, action)
            project = views.project_of(view)
            if call.version.at_least("2.51") or call.allows(policy.ACTION_EVENTS, project):
                body["events"] = [_event(call, view, e) for e in action["events"]]
            return {"instanceAction": body}
    raise not_found(f"Action {request_id} could not be found.")
