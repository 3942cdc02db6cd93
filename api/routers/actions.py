"""`POST /v2.1/servers/{id}/action`: shelve, shelveOffload, unshelve, os-start, os-stop,
pause, unpause, suspend, resume (202, empty: `serve` performs them) and
os-getConsoleOutput."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response

from api import policy
from api.deps import Call, CallDep
from api.errors import ApiError, bad_request
from api.routers.servers import authorize_on, find_server
from application import lifecycle, queries
from domain.errors import HostNotFound, NotFound

router = APIRouter(prefix="/v2.1", tags=["server actions"])

# Nova's action name → the application layer's
LIFECYCLE = {"shelve": "shelve", "shelveOffload": "shelveOffload", "unshelve": "unshelve",
             "os-start": "start", "os-stop": "stop", "pause": "pause", "unpause": "unpause",
             "suspend": "suspend", "resume": "resume"}
AVAILABILITY_ZONES = ("nova",)


@router.post("/servers/{server_id}/action", response_model=None,
             responses={202: {"description": "recorded; `serve` performs it"}})
def server_action(call: CallDep, server_id: str,
                  body: Annotated[dict[str, Any], Body()]) -> Response | dict[str, Any]:
    if len(body) != 1:
        raise bad_request("There is either no action or more than one action in the body.")
    ((name, argument),) = body.items()
    rule = policy.ACTION_RULES.get(name)
    if rule is None:
        raise bad_request(f"There is no such action: {name}")
    view = find_server(call, server_id)
    authorize_on(call, rule, view)
    if name == "os-getConsoleOutput":
        return console_output(call, view, argument)
    host = _unshelve_host(call, view, argument) if name == "unshelve" else None
    if name != "unshelve" and argument not in (None, {}):  # tempest sends {}, clients null
        raise bad_request(f"Invalid input for field/attribute {name}. "
                          f"Value: {argument}. {argument!r} is not None")
    try:
        lifecycle.request(call.ctx, call.caller, LIFECYCLE[name], view["id"], host=host,
                          request_id=call.request_id)
    except HostNotFound:  # Nova's ComputeHostNotFound: the request is bad, not the URL
        raise bad_request(f"Compute host {host} could not be found.") from None
    return Response(status_code=202)


def _unshelve_host(call: Call, view: dict[str, Any], argument: Any) -> str | None:
    """`null`; `{"availability_zone": …}` from 2.77; `{"host": H}` from 2.91 (admin)."""
    if argument is None or argument == {}:
        return None
    allowed = set()
    if call.version.at_least("2.77"):
        allowed.add("availability_zone")
    if call.version.at_least("2.91"):
        allowed.add("host")
    if not isinstance(argument, dict) or not set(argument) <= allowed:
        raise bad_request(
            "Invalid input for field/attribute unshelve. Value: "
            f"{argument}. Additional properties are not allowed or the value is not "
            f"valid at microversion {call.version}.")
    zone = argument.get("availability_zone")
    if zone is not None and zone not in AVAILABILITY_ZONES:
        raise bad_request(f"The requested availability zone is not available: {zone}")
    host = argument.get("host")
    if host is None:
        return None
    if not isinstance(host, str) or not host:
        raise bad_request("Invalid input for field/attribute host.")
    authorize_on(call, policy.UNSHELVE_TO_HOST, view)
    return host  # the domain refuses it (409) unless SHELVED_OFFLOADED


def console_output(call: Call, view: dict[str, Any], argument: Any) -> dict[str, Any]:
    """The instance's console log, its last `length` lines; 404 when it has none."""
    length = argument.get("length") if isinstance(argument, dict) else None
    if length is not None:
        try:
            length = int(length)
        except (TypeError, ValueError):
            raise bad_request("Invalid input for field/attribute length.") from None
        if length < -1:
            raise bad_request("Invalid input for field/attribute length.")
    try:
        lines = queries.console_log(call.ctx, view["id"])
    except NotFound:  # on no host, or not started yet: Nova answers the same
        raise ApiError(404, "Guest does not have a console available.") from None
    if length is not None and length >= 0:
        lines = lines[-length:] if length else []
    return {"output": "\n".join(lines)}
