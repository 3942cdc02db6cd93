"""`--wait`: block until the instance's task is none again, showing each step on a terminal."""

from __future__ import annotations

import sys
import time
import uuid

from cli.bootstrap import Context
from domain.errors import ShelfError
from domain.instance import Instance
from domain.service import find
from projections.audit import event_record

POLL_SECONDS = 0.02  # how often the store's head is checked: one indexed query


class TimedOut(ShelfError):
    exit_code = 5


class ActionFailed(ShelfError):
    exit_code = 1


def wait_for_idle(ctx: Context, instance_id: uuid.UUID, request_id: str, timeout: float) -> None:
    """Return when idle; raise ActionFailed if it ended with a fault, TimedOut after timeout."""
    deadline = time.monotonic() + timeout
    shown = _current_version(ctx, instance_id)
    show_progress = sys.stdout.isatty()
    seen_head: int | None = -1
    task_state: str | None = None
    while True:
        head = ctx.app.recorder.max_notification_id()
        if head != seen_head:  # something was recorded since the last look
            seen_head = head
            instance = find(ctx.repo, instance_id, Instance)
            if instance is None:
                raise ShelfError(f"instance {instance_id} vanished from the store")
            if show_progress and instance.version > shown:
                _print_steps(ctx, instance_id, shown)
                shown = instance.version
            if instance.is_idle:
                _raise_on_fault(instance, request_id)
                return
            task_state = instance.task_state
        if time.monotonic() >= deadline:
            raise TimedOut(
                f"timed out after {timeout:g}s waiting for instance {instance_id} "
                f"(task_state {task_state}); is `shelf serve` running?"
            )
        time.sleep(POLL_SECONDS)


def _current_version(ctx: Context, instance_id: uuid.UUID) -> int:
    instance = find(ctx.repo, instance_id, Instance)
    return instance.version if instance is not None else 0


def _print_steps(ctx: Context, instance_id: uuid.UUID, after_version: int) -> None:
    for event in ctx.app.events.get(instance_id, gt=after_version):
        record = event_record(event)
        detail = record.get("error") or record.get("host") or ""
        print(f"  {record['timestamp'][11:19]}  {record['event']:<24} {detail}", flush=True)


def _raise_on_fault(instance: Instance, request_id: str) -> None:
    if instance.fault and instance.request_id == request_id:
        raise ActionFailed(
            f"{instance.action} of {instance.name} failed at {instance.fault['step']}: "
            f"{instance.fault['message']} (now {instance.status})"
        )
