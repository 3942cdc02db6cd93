"""When a drive's steps reach the store: the commit policy behind the process manager's
`records` port (domain/drive_ports.py `StepRecords`).

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
    """One per process manager: what its drives hold unrecorded, how long each step takes
    on each host, and which versions this process recorded itself."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        # The object each drive goes on with: what the last step left (see take_latest).
        self._latest: dict[uuid.UUID, Instance] = {}
        # Instances whose object holds events not yet recorded: since when (monotonic).
        self._unrecorded: dict[uuid.UUID, float] = {}
        # (host, step) -> seconds, a moving average: see QUICK_STEP_SECONDS.
        self._step_seconds: dict[tuple[str, str], float] = {}
        self._recorded: dict[uuid.UUID, int] = {}  # the version this process last saved
        self.log = structlog.get_logger("shelf.process_manager")

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
        if instance.id not in self._unrecorded:
            return True
        try:
            self.save(instance)
        except RecordConflict:
            self.log.info("step.lost_race", instance_id=str(instance.id), step="record")
            return False
        finally:
            self._latest.pop(instance.id, None)
        return True

    def keep_unrecorded(self, instance: Instance) -> None:
        """The drive goes on with `instance`; its new events are recorded with a later
        step's, or when the drive stops."""
        self._latest[instance.id] = instance
        self._unrecorded.setdefault(instance.id, time.monotonic())

    def save(self, *aggregates: Any) -> None:
        """Save in one transaction; remember the objects that are now the stored state."""
        try:
            self.repo.save(*aggregates)
        finally:  # saved or not, the objects hold no unrecorded events any more
            for aggregate in aggregates:
                self._unrecorded.pop(aggregate.id, None)
        for aggregate in aggregates:
            if isinstance(aggregate, Instance):
                self._latest[aggregate.id] = aggregate
                if len(self._recorded) >= RECORDED_KEPT:  # left by drives whose last
                    self._recorded.clear()  # event was never asked about: forget them all
                self._recorded[aggregate.id] = aggregate.version

    def take_latest(self, instance_id: uuid.UUID) -> Instance | None:
        return self._latest.pop(instance_id, None)

    def forget(self, instance_id: uuid.UUID) -> None:
        self._unrecorded.pop(instance_id, None)
        self._latest.pop(instance_id, None)

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
