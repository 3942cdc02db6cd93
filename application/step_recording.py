"""When a drive's steps reach the store: the commit policy behind the process manager's
`records` port (domain/drive_ports.py `StepRecords`). Every step runs through
`StepRecorder.run_step`, which times it on its host and notes since when the object the
drive goes on with holds events not yet recorded.

Quick steps are recorded together. Before each step, a drive commits the events it holds
unless that step has been quick on its host so far (a step that only records always is);
and always before a step that needs them durable (a deletion), or if they have waited
RECORD_WITHIN_SECONDS by then. Else they go in one transaction with the next steps'
events, at the latest when the drive stops. A crash then repeats those few quick steps,
as it repeats one: each is idempotent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import structlog

from domain import plans
from domain.instance import Instance
from domain.process_manager import acting_host
from domain.service import RecordConflict, Repository

# A hypervisor step is quick on a host if it has taken under QUICK_STEP_SECONDS there
# (libvirt's test driver; a network update): a real power-off or snapshot takes seconds,
# so what came before is recorded when it starts, and `show` follows it step by step. A
# step never timed on a host counts as slow. The time taken is a moving average that rises
# at once and falls slowly, so one slow run of a step marks it slow for the next several.
# Steps that only record (claim, release, finish) are quick: their time is the
# database's, not a host's.
QUICK_STEP_SECONDS = 0.01
RECORD_WITHIN_SECONDS = 0.05
STEP_TIME_WEIGHT = 0.2  # of a quicker run in the moving average
# Steps whose effect a repeat of an earlier step could not survive: deleting the image (or
# volume) leaves a repeated spawn nothing to spawn from. A claim (first in its plans, so
# nothing is held before it in practice) retries on the assumption that the instance
# holds its own event only. What comes before is committed first.
RECORDED_BEFORE = frozenset({plans.CLAIM, plans.DELETE_IMAGE, plans.DELETE_VOLUME})
# How many instances' last recorded versions `recorded_here` keeps. Forgetting one costs
# at most a drive that finds nothing to do.
RECORDED_KEPT = 10_000


class StepRecorder:
    """One per process manager: since when its drives hold events unrecorded, how long each
    step takes on each host, and which versions this process recorded itself."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        # Since when (monotonic) each drive's object holds events not yet recorded.
        self._unrecorded: dict[uuid.UUID, float] = {}
        # (host, step) -> seconds, a moving average: see QUICK_STEP_SECONDS.
        self._step_seconds: dict[tuple[str, str], float] = {}
        self._recorded: dict[uuid.UUID, int] = {}  # the version this process last saved
        self.log = structlog.get_logger("shelf.process_manager")

    def run_step(
        self, instance: Instance, step: str, body: Callable[[Instance], Instance]
    ) -> Instance:
        """Run the step, `body(instance)`, timed on the host it acts on (a step that fails
        is not timed); the object it returns is the one the drive goes on with."""
        host, started = acting_host(instance, step), time.monotonic()
        went_on = body(instance)
        if host is not None:
            self.note_step_seconds(host, step, time.monotonic() - started)
        if went_on.pending_events:  # recorded on the object, not saved: kept for later
            self._unrecorded.setdefault(went_on.id, time.monotonic())
        return went_on

    def due_before(self, instance: Instance, step: str) -> bool:
        """Whether the events the drive holds unrecorded are committed before `step`."""
        since = self._unrecorded.get(instance.id)
        if since is None:
            return False
        if step in RECORDED_BEFORE or time.monotonic() - since >= RECORD_WITHIN_SECONDS:
            return True
        host = acting_host(instance, step)
        if host is None:
            return False  # only records: as quick as the commit it would wait for
        seconds = self._step_seconds.get((host, step))
        return seconds is None or seconds >= QUICK_STEP_SECONDS

    def record_unrecorded(self, instance: Instance) -> bool:
        """Commit the events `instance` holds; False if another writer moved it on first
        (the events are lost, and their steps are done again from the stored state). The
        caller goes on with `instance` itself, or reloads."""
        if not instance.pending_events:
            return True
        try:
            self.save(instance)
        except RecordConflict:
            self.log.info("step.lost_race", instance_id=str(instance.id), step="record")
            return False
        return True

    def save(self, *aggregates: Any) -> None:
        """Save in one transaction; remember the versions of the instances saved."""
        try:
            self.repo.save(*aggregates)
        finally:  # saved or not, the objects hold no unrecorded events any more
            for aggregate in aggregates:
                self._unrecorded.pop(aggregate.id, None)
        for aggregate in aggregates:
            if isinstance(aggregate, Instance):
                if len(self._recorded) >= RECORDED_KEPT:  # left by drives whose last
                    self._recorded.clear()  # event was never asked about: forget them all
                self._recorded[aggregate.id] = aggregate.version

    def forget(self, instance_id: uuid.UUID) -> None:
        self._unrecorded.pop(instance_id, None)

    def note_step_seconds(self, host: str, step: str, seconds: float) -> None:
        """How long `step` took on `host`: whether the events before it wait for it next
        time (see QUICK_STEP_SECONDS)."""
        average = self._step_seconds.get((host, step), seconds)
        if seconds < average:
            seconds = average + STEP_TIME_WEIGHT * (seconds - average)
        self._step_seconds[(host, step)] = seconds

    def recorded_here(self, instance_id: uuid.UUID, version: int) -> bool:
        """Whether this process recorded that version of the instance itself: its drive
        went on from there already, so the event needs no drive of its own (the worker
        asks, application/worker.py). Forgotten once the last version it recorded has
        been asked about."""
        last = self._recorded.get(instance_id)
        if last is None:
            return False
        if version >= last:
            self._recorded.pop(instance_id, None)
        return version <= last
