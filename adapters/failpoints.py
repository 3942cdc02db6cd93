"""Failpoints (the fail-rs / gofail convention), read from SHELF_FAILPOINTS.

SHELF_FAILPOINTS="before:Snapshot=crash,after:Spawn=error". `crash` ends the process at
once with status 137, as if killed -9, flushing nothing; `error` raises as if the
hypervisor had failed. With none set, a check costs one dict lookup. Besides the steps'
before:/after: points there is `projection:batch`, inside a projection batch's transaction
after its rows are written and before its position is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

from adapters.logs import get_logger
from domain.errors import UsageError
from domain.plans import HYPERVISOR_STEPS
from domain.ports import HypervisorError

ACTIONS = ("crash", "error")
OTHER_POINTS = ("projection:batch",)
KILLED_STATUS = 137


def parse_failpoints(spec: str) -> dict[str, str]:
    points: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        when, _, step = name.partition(":")
        if name not in OTHER_POINTS and (
            when not in ("before", "after") or step not in HYPERVISOR_STEPS
        ):
            raise UsageError(
                f"bad failpoint {name!r}: use before:STEP or after:STEP with STEP one of "
                + ", ".join(HYPERVISOR_STEPS) + ", or " + ", ".join(OTHER_POINTS)
            )
        if action not in ACTIONS:
            raise UsageError(f"bad failpoint action {action!r} for {name}: use crash or error")
        points[name] = action
    return points


def exit_as_if_killed() -> NoReturn:
    os._exit(KILLED_STATUS)  # no cleanup, no flushing: what kill -9 leaves behind


class EnvFailpoints:
    def __init__(
        self, spec: str | None = None, crash: Callable[[], NoReturn] = exit_as_if_killed
    ) -> None:
        self.points = parse_failpoints(
            spec if spec is not None else os.environ.get("SHELF_FAILPOINTS", "")
        )
        self.crash = crash

    def hit(self, name: str) -> None:
        action = self.points.get(name)
        if action is None:
            return
        get_logger("shelf.failpoints").warning("failpoint.hit", failpoint=name, action=action)
        if action == "crash":
            self.crash()
        raise HypervisorError(f"failpoint {name} injected an error")
