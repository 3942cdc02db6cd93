"""The ports a drive records its steps and places a claim through. The process manager
says what happened; when it reaches the store (application/step_recording.py) and which
host a claim goes to (application/placement.py) are decided behind these."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from domain.host import Host
from domain.instance import Instance


class StepRecords(Protocol):
    """Records a drive's events: some at once, some together with a later step's."""

    def run_step(
        self, instance: Instance, step: str, body: Callable[[Instance], Instance]
    ) -> Instance:
        """Run `body(instance)`, the step; return what it returns, the object the drive goes
        on with. Events that object holds unrecorded are committed with a later step's,
        or when the drive stops (see `due_before`, `record_unrecorded`)."""

    def due_before(self, instance: Instance, step: str) -> bool:
        """Whether the events held for `instance` are committed before `step` runs."""

    def record_unrecorded(self, instance: Instance) -> bool:
        """Commit the events `instance` holds; False if another writer moved it on first
        (the events are lost, and their steps are done again from the stored state)."""

    def save(self, *aggregates: Any) -> None:
        """Commit these aggregates' events now, in one transaction (or RecordConflict)."""

    def forget(self, instance_id: uuid.UUID) -> None:
        """The drive failed: what it held unrecorded is lost, done again next drive."""


class Placement(Protocol):
    """Where a claim goes."""

    def choose_host(self, instance: Instance) -> Host:
        """The host to claim on, freshly loaded (raises NoRoom when none fits)."""

    def saw(self, host: Host) -> None:
        """`host` as just saved by this process."""

    def claiming(self, host_name: str) -> AbstractContextManager[bool]:
        """Held while a claim on that host is made and saved: this process's other claims
        there wait for it (as Nova's resource tracker claims under a lock) rather than
        race it and lose at save. Says whether it waited (the host may have changed)."""
