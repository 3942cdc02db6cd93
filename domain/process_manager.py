"""The process manager: for an instance with a plan in flight, perform the next step.

A step is: read the aggregate, ask the hypervisor for its real state, act only if still
needed (every HostDriver method is idempotent), record the result as the next event.
A crash between the act and the record is repaired by doing the step again. Optimistic
concurrency on the aggregate means two workers can never both record one step.

A drive goes: next step → perform it (domain/steps.py) → record. Each step records its
event on the instance and returns the object the drive goes on with. When the events held
reach the store is not decided here: each step runs through its `records`
(application/step_recording.py: quick steps go together, timed there), which the drive
asks before each step whether what it holds is due. A crash then repeats those few
steps, as it repeats one: each is idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from domain import plans
from domain import states as s
from domain.drive_ports import Placement, StepRecords
from domain.errors import NoRoom
from domain.instance import Instance
from domain.ports import (
    Failpoints,
    HostDrivers,
    HostUnreachable,
    HypervisorError,
    ImageNotFound,
    ImageStore,
    NoFailpoints,
    VolumeStore,
)
from domain.service import RecordConflict, Repository, find
from domain.steps import SERVICE_USER, Steps

MAX_STEPS_PER_DRIVE = 64
# The steps of a delete that a host which can't be reached is left out of (Nova's local
# delete): what the instance has there is left for `reconcile`.
LEFT_ON_HOST_STEPS = frozenset({plans.POWER_OFF, plans.CLEAN_NETWORK, plans.DESTROY})


@dataclass(frozen=True)
class Settings:
    shelved_offload_time: float = 0  # -1 never, 0 at once, N seconds after shelving
    shutdown_timeout: float = 60
    shutdown_retry_interval: float = 10
    # The hosts whose hypervisor steps this worker performs (`serve --host`); None: all.
    # Steps that call no hypervisor (claim, finish, ...) are anyone's.
    hosts: frozenset[str] | None = None


_ON_HOST_STEPS = frozenset({plans.POWER_OFF, plans.POWER_ON, plans.PAUSE, plans.UNPAUSE,
                            plans.SUSPEND, plans.RESUME, plans.SNAPSHOT})


def acting_host(instance: Instance, step: str) -> str | None:
    """The host whose hypervisor `step` calls (as the step method picks it), or None for a
    step that only records, or touches the shared image and volume stores."""
    if step in _ON_HOST_STEPS:
        return instance.host
    if step == plans.CLEAN_NETWORK:
        return instance.network_host or instance.claim_host
    if step == plans.DESTROY:
        return instance.host or instance.claim_host
    if step in (plans.SETUP_NETWORK, plans.SPAWN):
        return instance.claim_host
    return None


def is_local_delete(instance: Instance, step: str, error: Exception) -> bool:
    """Nova's local delete: a delete whose host can't be reached (within the connect and
    keepalive bounds) goes on without it, for the steps left on that host."""
    return (isinstance(error, HostUnreachable) and instance.plan == "delete"
            and step in LEFT_ON_HOST_STEPS)


class ProcessManager(Steps):
    def __init__(
        self, repo: Repository, hosts: HostDrivers, images: ImageStore, volumes: VolumeStore,
        records: StepRecords, placement: Placement, settings: Settings | None = None,
        failpoints: Failpoints | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.repo, self.hosts, self.images, self.volumes = repo, hosts, images, volumes
        self.records = records  # when the steps' events are committed
        self.placement = placement  # where a claim goes
        self.settings = settings or Settings()
        self.failpoints = failpoints or NoFailpoints()
        self.clock = clock
        self.log = structlog.get_logger("shelf.process_manager")
        self.steps: dict[str, Callable[[Instance], Instance]] = {
            plans.POWER_OFF: self.power_off, plans.POWER_ON: self.power_on,
            plans.PAUSE: self.pause, plans.UNPAUSE: self.unpause,
            plans.SUSPEND: self.suspend, plans.RESUME: self.resume,
            plans.SNAPSHOT: self.snapshot, plans.CLEAN_NETWORK: self.clean_network,
            plans.DESTROY: self.destroy, plans.RELEASE_CLAIM: self.release_claim,
            plans.CLAIM: self.claim, plans.SETUP_NETWORK: self.setup_network,
            plans.SPAWN: self.spawn, plans.DELETE_IMAGE: self.delete_image,
            plans.DELETE_VOLUME: self.delete_volume, plans.FINISH: self.finish,
        }

    # ---- driving ----------------------------------------------------------------------

    def drive(self, instance_id: uuid.UUID) -> None:
        """Perform steps until the instance is idle (or another worker holds it), and
        record whatever they left unrecorded."""
        try:
            instance = self._perform_steps(instance_id)
        except BaseException:  # what it held unrecorded is lost: done again next drive
            self.records.forget(instance_id)
            raise
        if instance is not None:
            self.records.record_unrecorded(instance)

    def _perform_steps(self, instance_id: uuid.UUID) -> Instance | None:
        """The steps of one drive; returns the object it went on with, which may hold
        the events of its last quick steps, not yet recorded."""
        instance: Instance | None = None
        for _ in range(MAX_STEPS_PER_DRIVE):
            if instance is None:
                instance = find(self.repo, instance_id, Instance)
                if instance is None:
                    return None
            step = instance.next_step()
            if step is None:
                if not self.offload_if_due(instance):
                    return instance
                continue  # it saved the offload request on `instance`
            if not self.performs_here(instance, step):
                return instance  # the serve that owns that host takes it from here
            if (self.records.due_before(instance, step)
                    and not self.records.record_unrecorded(instance)):
                instance = None  # another writer moved it on: reload, repeat what was lost
                continue
            try:
                instance = self.perform(instance, step)
            except RecordConflict:
                self.log.info("step.lost_race", instance_id=str(instance_id), step=step)
                instance = None  # another writer moved it on: reload
        return instance

    def performs_here(self, instance: Instance, step: str) -> bool:
        owned = self.settings.hosts
        return owned is None or acting_host(instance, step) in (None, *owned)

    def perform(self, instance: Instance, step: str) -> Instance | None:
        """Perform `step`; the object to go on with: the one the step recorded its event
        on, or the one a failure was recorded on; None if another writer or request moved
        the instance on first (a RecordConflict from the step itself is raised)."""
        log = self.log.bind(
            instance_id=str(instance.id), request_id=instance.request_id, step=step,
            plan=instance.plan,
        )
        log.debug("step.start")
        host = acting_host(instance, step)  # before the step: it may move the instance
        try:
            went_on = self.records.run_step(instance, step, self._body_of(step))
        except (HypervisorError, NoRoom) as error:
            log.warning("step.failed", error=str(error))
            self.records.record_unrecorded(instance)  # the steps before it did succeed
            if host is not None and is_local_delete(instance, step, error):
                return self.delete_without_host(instance, step, host, error)
            return self.record_failure(instance, step, error)
        if step == plans.FINISH:
            log.info("action.finished", vm_state=went_on.vm_state)
        else:
            log.info("step.done")
        return went_on

    def _body_of(self, step: str) -> Callable[[Instance], Instance]:
        """The step's method; a failpoint `before:<step>` first (none before Finish)."""
        if step == plans.FINISH:
            return self.finish
        method = self.steps[step]

        def body(instance: Instance) -> Instance:
            self.failpoints.hit(f"before:{step}")
            return method(instance)

        return body

    def record_failure(self, failed: Instance, step: str, error: Exception) -> Instance | None:
        """Record `StepFailed` and the rollback plan; the object it was recorded on, or
        None if another worker or request moved the instance on meanwhile."""
        # Reload: the failed attempt may have mutated the object without saving it.
        instance = find(self.repo, failed.id, Instance)
        if instance is None or instance.next_step() != step:
            return None
        rollback, vm_state = plans.rollback_for(
            instance.plan or "abort", step, instance.vm_state, isinstance(error, ImageNotFound)
        )
        instance.record_step_failed(
            user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
            step=step, error=str(error), host=instance.host or instance.claim_host,
            rollback_plan=rollback, final_vm_state=vm_state,
        )
        self.records.save(instance)
        return instance

    def delete_without_host(
        self, failed: Instance, step: str, host: str, error: Exception
    ) -> Instance | None:
        """Nova's local delete (see `is_local_delete`): the delete goes on without the
        host. The object it was recorded on, or None if another worker or request moved
        the instance on meanwhile."""
        instance = find(self.repo, failed.id, Instance)
        if instance is None or instance.next_step() != step:
            return None
        instance.record_left_on_host(
            user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
            host=host, step=step,
            reason=f"{error}; deleted without it: what is left there is for `shelf reconcile`",
        )
        self.records.save(instance)
        self.log.warning("step.left_on_host", instance_id=str(instance.id), step=step,
                         host=host)
        return instance

    def offload_if_due(self, instance: Instance) -> bool:
        """shelved_offload_time: offload a shelved instance once its time has come."""
        wait = self.settings.shelved_offload_time
        if instance.vm_state != s.SHELVED or not instance.is_idle or wait < 0:
            return False
        if instance.fault is not None and instance.action in ("shelve", "shelveOffload"):
            # An offload that failed is not tried again by itself (it would fail again,
            # at once, for ever): the fault stays shown until someone asks again.
            return False
        shelved_at = instance.shelved_at
        if shelved_at is None or (self.clock() - shelved_at).total_seconds() < wait:
            return False
        if wait == 0:  # part of the shelve itself, as in Nova: same request, same action
            user, request_id, action = instance.user, instance.request_id, "shelve"
        else:
            user, request_id, action = SERVICE_USER, f"req-{uuid.uuid4()}", "shelveOffload"
        instance.request_shelve_offload(user or SERVICE_USER, request_id or "", action)
        self.records.save(instance)
        return True
