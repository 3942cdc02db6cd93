"""`--wait`: block until the instance's task is none again, handing each new step to the
caller (the CLI prints them on a terminal)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from application.bootstrap import Context
from domain.errors import ShelfError
from domain.instance import Instance
from domain.service import find
from projections.audit import event_record

POLL_SECONDS = 0.02  # how often the store's head is checked: one indexed query


class TimedOut(ShelfError):
    exit_code = 5


class ActionFailed(ShelfError):
    exit_code = 1


StepSeen = Callable[[dict[str, Any]], None]


def wait_for_idle(
    ctx: Context, instance: str | uuid.UUID, request_id: str, timeout: float,
    on_step: StepSeen | None = None,
) -> None:
    """Return when idle; raise ActionFailed if it ended with a fault, TimedOut after timeout.
    `on_step` gets each event recorded meanwhile (`history`'s record of it)."""
    instance_id = instance if isinstance(instance, uuid.UUID) else uuid.UUID(instance)
    deadline = time.monotonic() + timeout
    shown = _current_version(ctx, instance_id)
    seen_head: int | None = -1
    task_state: str | None = None
    while True:
        head = ctx.app.recorder.max_notification_id()
        if head != seen_head:  # something was recorded since the last look
            seen_head = head
            found = find(ctx.repo, instance_id, Instance)
            if found is None:
                raise ShelfError(f"instance {instance_id} vanished from the store")
            if on_step is not None and found.version > shown:
                for event in ctx.app.events.get(instance_id, gt=shown):
                    on_step(event_record(event))
                shown = found.version
            if found.is_idle:
                _raise_on_fault(found, request_id)
                return
            task_state = found.task_state
        if time.monotonic() >= deadline:
            raise TimedOut(
                f"timed out after {timeout:g}s waiting for instance {instance_id} "
                f"(task_state {task_state}); is `shelf serve` running?"
            )
        time.sleep(POLL_SECONDS)


def _current_version(ctx: Context, instance_id: uuid.UUID) -> int:
    instance = find(ctx.repo, instance_id, Instance)
    return instance.version if instance is not None else 0


def _raise_on_fault(instance: Instance, request_id: str) -> None:
    if instance.fault and instance.request_id == request_id:
        raise ActionFailed(
            f"{instance.action} of {instance.name} failed at {instance.fault['step']}: "
            f"{instance.fault['message']} (now {instance.status})"
        )
