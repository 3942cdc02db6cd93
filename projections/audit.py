"""Nova-style instance actions and the plain event history, derived from stored events.

An action is every event sharing one request id; its events are the steps performed for
it, each with the time it started (the previous event) and finished (its own record).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from projections.base import utc_text

# Stored event class -> the step it records.
STEP_OF_EVENT = {
    "PoweredOff": "PowerOff", "PoweredOn": "PowerOn", "GuestPaused": "Pause",
    "GuestUnpaused": "Unpause", "GuestSuspended": "Suspend", "GuestResumed": "Resume",
    "Snapshotted": "Snapshot", "NetworkCleaned": "CleanNetwork", "Destroyed": "Destroy",
    "ClaimReleased": "ReleaseClaim", "ResourcesClaimed": "Claim",
    "NetworkSetUp": "SetupNetwork", "Spawned": "Spawn", "ImageDeleted": "DeleteImage",
    "VolumeDeleted": "DeleteVolume",
}

# How a power-off ended (domain.ports) -> what an action's event says.
SHUTDOWN_DETAILS = {
    "clean": "clean shutdown",
    "destroyed-after-timeout": "destroyed after the clean-shutdown timeout",
    "destroyed": "destroyed at once",
    "off": "was off already",
}

# Request event class -> Nova's action name.
ACTION_OF_REQUEST = {
    "BootRequested": "create", "ShelveRequested": "shelve", "UnshelveRequested": "unshelve",
    "StartRequested": "start", "StopRequested": "stop", "PauseRequested": "pause",
    "UnpauseRequested": "unpause", "SuspendRequested": "suspend",
    "ResumeRequested": "resume", "DeleteRequested": "delete",
}

CLOSING_EVENTS = frozenset({
    "Booted", "Started", "Stopped", "Paused", "Unpaused", "Suspended", "Resumed", "Shelved",
    "ShelveOffloaded", "Unshelved", "Deleted", "RolledBack",
})

_SCALARS = frozenset({str, int, bool, float})
_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def _plain(value: Any) -> Any:
    if value is None or type(value) in _SCALARS:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def event_record(event: Any, timestamp: str | None = None) -> dict[str, Any]:
    """One stored event as `history --json` prints it (`timestamp`: already formatted)."""
    record: dict[str, Any] = {
        "event": type(event).__name__,
        "version": event.originator_version,
        "timestamp": timestamp or utc_text(event.timestamp),
        "user": getattr(event, "user", None),
        "request_id": getattr(event, "request_id", None),
    }
    for key, value in vars(event).items():
        if key not in _ENVELOPE and key not in record:
            record[key] = _plain(value)
    return record


def actions_from_history(
    history: list[dict[str, Any]], hosts: list[str | None] | None = None
) -> list[dict[str, Any]]:
    """Group a history (oldest first) into actions, oldest first. `hosts`, when given, is
    the instance's host right after each record (the action's host when no step names one)."""
    actions: dict[str, dict[str, Any]] = {}
    previous_time: str | None = None
    for index, record in enumerate(history):
        request_id = record["request_id"] or ""
        if request_id not in actions:
            actions[request_id] = new_action(record)
        action = actions[request_id]
        step = apply_record(action, record, previous_time, hosts[index] if hosts else None)
        if step is not None:
            action["events"].append(step)
        previous_time = record["timestamp"]
    return list(actions.values())


def new_action(record: dict[str, Any]) -> dict[str, Any]:
    """The action a record with an unseen request id opens."""
    name = record.get("action") or ACTION_OF_REQUEST.get(record["event"], record["event"])
    return {
        "action": name, "request_id": record["request_id"] or "", "user": record["user"],
        "host": None, "start_time": record["timestamp"], "finish_time": None,
        "result": None, "message": None, "events": [],
    }


def apply_record(
    action: dict[str, Any], record: dict[str, Any], previous_time: str | None,
    instance_host: str | None,
) -> dict[str, Any] | None:
    """What one record does to its action; returns the step event it records, if any."""
    step_event = _step_event(record, previous_time)
    if step_event is not None and step_event["result"] == "Error":
        action["result"] = "Error"
        action["message"] = step_event["details"]
    if record["event"] in CLOSING_EVENTS:
        action["finish_time"] = record["timestamp"]
        if action["result"] is None:
            action["result"] = "Success"
    if action["host"] is None:
        action["host"] = (step_event or {}).get("host") or instance_host
    return step_event


def _success_details(record: dict[str, Any]) -> str | None:
    """What a successful step says besides its name: how a power-off ended."""
    shutdown = record.get("shutdown") if record["event"] == "PoweredOff" else None
    return SHUTDOWN_DETAILS.get(shutdown, shutdown) if shutdown else None


def _step_event(record: dict[str, Any], started: str | None) -> dict[str, Any] | None:
    name = record["event"]
    if name == "StepFailed":
        step, result, details = record["step"], "Error", record["error"]
    elif name == "LeftOnHost":  # a delete that went on without its host
        step, result, details = record["step"], "Skipped", record["reason"]
    elif name in STEP_OF_EVENT:
        step, result, details = STEP_OF_EVENT[name], "Success", _success_details(record)
    else:
        return None
    return {
        "event": step, "start_time": started or record["timestamp"],
        "finish_time": record["timestamp"], "result": result,
        "host": record.get("host"), "details": details,
    }
