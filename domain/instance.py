"""The Instance aggregate: lifecycle.md's request table and the events of every step.

Public methods named `request_*` are the guarded requests (they raise Conflict when
lifecycle.md refuses them and record nothing). Methods named `record_*` are called by the
process manager to record the result of a step. Every event carries the user and the
request id that caused it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain import plans
from domain import states as s
from domain.errors import Conflict

# Which vm_states each simple request accepts (lifecycle.md, "Which requests are accepted").
ACCEPTS: dict[str, frozenset[str]] = {
    "shelve": frozenset({s.ACTIVE, s.STOPPED, s.PAUSED, s.SUSPENDED}),
    "shelveOffload": frozenset({s.SHELVED}),
    "unshelve": frozenset({s.SHELVED, s.SHELVED_OFFLOADED}),
    "start": frozenset({s.STOPPED}),
    "stop": frozenset({s.ACTIVE, s.PAUSED, s.SUSPENDED}),
    "pause": frozenset({s.ACTIVE}),
    "unpause": frozenset({s.PAUSED}),
    "suspend": frozenset({s.ACTIVE}),
    "resume": frozenset({s.SUSPENDED}),
}

# The project of an instance booted before instances recorded one: the CLI's default.
LEGACY_PROJECT = "admin"

SHELVED_IMAGE_NAMESPACE = uuid.UUID("6f1c2a52-8a53-4d0e-9d6b-2f8f3f0c5a11")


def shelved_image_id_for(instance_id: uuid.UUID, request_id: str) -> str:
    """Deterministic, so a snapshot redone after a crash writes the same image, never two."""
    return str(uuid.uuid5(SHELVED_IMAGE_NAMESPACE, f"{instance_id}:{request_id}"))


class Instance(Aggregate):
    """One virtual machine, from boot request to deletion."""

    # Defaults for instances (and snapshots of them) recorded before these were kept.
    project_id: str = LEGACY_PROJECT
    user_id: str | None = None
    flavor: dict[str, Any] | None = None

    @event("BootRequested")
    def __init__(
        self, *, id: uuid.UUID, name: str, host: str | None, vcpus: int, memory_mb: int,
        disk_gb: int, image_id: str | None, volume_backed: bool, ip: str, mac: str,
        user: str, request_id: str, project_id: str = LEGACY_PROJECT,
        user_id: str | None = None, flavor: dict[str, Any] | None = None,
    ) -> None:
        """`project_id` and `user_id` are the booting caller's; `flavor` is a copy of the
        flavor it was built from (None: sized explicitly). A new instance must be given
        all three (eventsourcing requires every keyword-only argument when an aggregate
        is created); the defaults are for events an older shelf stored without them."""
        self.name = name
        self.project_id = project_id
        self.user_id = user_id or user  # who created it (`user` is whoever asked last)
        self.flavor = flavor
        self.vcpus, self.memory_mb, self.disk_gb = vcpus, memory_mb, disk_gb
        self.image_id: str | None = image_id
        self.volume_backed: bool = volume_backed
        self.ip, self.mac = ip, mac
        self.vm_state: str = s.BUILDING
        self.task_state: str | None = s.SCHEDULING
        self.power_state: str = s.NOSTATE
        self.host: str | None = None  # where the domain and its disk are
        self.claim_host: str | None = None  # where our resources are claimed
        self.network_host: str | None = None  # where our DHCP entry is
        self.target_host: str | None = host  # the host asked for (boot, unshelve --host)
        self.shelved_at: datetime | None = None
        self.shelved_image_id: str | None = None
        self.shelved_host: str | None = None
        self.pending_image_id: str | None = None
        self.volume_deleted: bool = False
        self.destroyed: bool = True  # nothing exists on a host yet
        self.network_cleaned: bool = True
        self.fault: dict[str, Any] | None = None
        self.plan: str | None = "create"
        self.action: str | None = "create"
        self.request_id: str | None = request_id
        self.user: str | None = user
        self.final_vm_state: str | None = None
        # The machine type its first domain got (e.g. pc-i440fx-7.2): every later domain,
        # on any host, gets the same virtual hardware, as Nova keeps hw_machine_type.
        self.machine: str | None = None
        self.done_in_plan: list[str] = []  # steps recorded since the plan began

    # ---- guards ---------------------------------------------------------------------

    def _refuse_unless(self, action: str, accepted: frozenset[str]) -> None:
        if self.task_state is not None or self.vm_state not in accepted:
            raise Conflict(
                f"Cannot '{action}' instance {self.id} while it is in "
                f"vm_state {self.vm_state}" + (
                    f" and task_state {self.task_state}" if self.task_state else ""
                )
            )

    @property
    def is_idle(self) -> bool:
        return self.task_state is None

    @property
    def status(self) -> str:
        return s.status_of(self.vm_state)

    # ---- requests -------------------------------------------------------------------

    def request_shelve(self, user: str, request_id: str) -> None:
        self._refuse_unless("shelve", ACCEPTS["shelve"])
        if self.volume_backed:  # never snapshotted: straight to offload
            self._shelve_requested(
                user=user, request_id=request_id, plan="shelve_offload",
                task_state=s.SHELVING_OFFLOADING, image_id=None,
            )
        else:
            self._shelve_requested(
                user=user, request_id=request_id, plan="shelve", task_state=s.SHELVING,
                image_id=shelved_image_id_for(self.id, request_id),
            )

    @event("ShelveRequested")
    def _shelve_requested(
        self, user: str, request_id: str, plan: str, task_state: str, image_id: str | None
    ) -> None:
        self._begin("shelve", plan, task_state, user, request_id)
        self.pending_image_id = image_id

    def request_shelve_offload(
        self, user: str, request_id: str, action: str = "shelveOffload"
    ) -> None:
        self._refuse_unless("shelveOffload", ACCEPTS["shelveOffload"])
        self._shelve_offload_requested(user=user, request_id=request_id, action=action)

    @event("ShelveOffloadRequested")
    def _shelve_offload_requested(self, user: str, request_id: str, action: str) -> None:
        self._begin(action, "shelve_offload", s.SHELVING_OFFLOADING, user, request_id)

    def request_unshelve(self, user: str, request_id: str, host: str | None) -> None:
        self._refuse_unless("unshelve", ACCEPTS["unshelve"])
        if host is not None and self.vm_state != s.SHELVED_OFFLOADED:
            raise Conflict(
                f"Cannot 'unshelve' instance {self.id} to host {host}: "
                f"it must be SHELVED_OFFLOADED, not {self.status}"
            )
        plan = "unshelve_in_place" if self.vm_state == s.SHELVED else "unshelve_offloaded"
        self._unshelve_requested(user=user, request_id=request_id, plan=plan, host=host)

    @event("UnshelveRequested")
    def _unshelve_requested(self, user: str, request_id: str, plan: str, host: str | None) -> None:
        self._begin("unshelve", plan, s.UNSHELVING, user, request_id)
        self.target_host = host

    def request_power(self, action: str, user: str, request_id: str) -> None:
        """start / stop / pause / unpause / suspend / resume."""
        self._refuse_unless(action, ACCEPTS[action])
        requested = {
            "start": self._start_requested, "stop": self._stop_requested,
            "pause": self._pause_requested, "unpause": self._unpause_requested,
            "suspend": self._suspend_requested, "resume": self._resume_requested,
        }[action]
        requested(user=user, request_id=request_id)

    @event("StartRequested")
    def _start_requested(self, user: str, request_id: str) -> None:
        self._begin("start", "start", s.POWERING_ON, user, request_id)

    @event("StopRequested")
    def _stop_requested(self, user: str, request_id: str) -> None:
        self._begin("stop", "stop", s.POWERING_OFF, user, request_id)

    @event("PauseRequested")
    def _pause_requested(self, user: str, request_id: str) -> None:
        self._begin("pause", "pause", s.PAUSING, user, request_id)

    @event("UnpauseRequested")
    def _unpause_requested(self, user: str, request_id: str) -> None:
        self._begin("unpause", "unpause", s.UNPAUSING, user, request_id)

    @event("SuspendRequested")
    def _suspend_requested(self, user: str, request_id: str) -> None:
        self._begin("suspend", "suspend", s.SUSPENDING, user, request_id)

    @event("ResumeRequested")
    def _resume_requested(self, user: str, request_id: str) -> None:
        self._begin("resume", "resume", s.RESUMING, user, request_id)

    def request_delete(self, user: str, request_id: str) -> None:
        if self.vm_state == s.DELETED:
            raise Conflict(f"Cannot 'delete' instance {self.id}: it is already deleted")
        if self.task_state == s.DELETING:
            return  # already being deleted: a repeated delete is a no-op, as in Nova
        self._delete_requested(user=user, request_id=request_id)

    @event("DeleteRequested")
    def _delete_requested(self, user: str, request_id: str) -> None:
        # Delete is accepted in any state (lifecycle.md) and supersedes a plan in flight.
        self._begin("delete", "delete", s.DELETING, user, request_id)

    def request_local_delete(self, host: str, reason: str, user: str, request_id: str) -> None:
        """Nova's local delete, for `host remove --force`: delete, leaving on `host` what
        is there (the claim is released by the caller, in the same transaction)."""
        if self.vm_state == s.DELETED:
            raise Conflict(f"Cannot 'delete' instance {self.id}: it is already deleted")
        if self.task_state != s.DELETING:
            self._delete_requested(user=user, request_id=request_id)
        self.record_left_on_host(user=user, request_id=self.request_id or request_id,
                                 host=host, step=plans.next_step(self) or plans.FINISH,
                                 reason=reason)

    def _begin(self, action: str, plan: str, task_state: str, user: str, request_id: str) -> None:
        self.action, self.plan, self.task_state = action, plan, task_state
        self.user, self.request_id = user, request_id
        self.fault = None
        self.final_vm_state = None
        self.done_in_plan = []

    # ---- step results (recorded by the process manager) --------------------------------

    @event("PoweredOff")
    def record_powered_off(
        self, user: str, request_id: str, host: str | None, shutdown: str | None = None
    ) -> None:
        # `shutdown`: how it ended (domain.ports.CLEAN, TIMED_OUT, ...); None in events
        # recorded before it was kept.
        self.power_state = s.SHUTDOWN
        self.done_in_plan.append(plans.POWER_OFF)
        if self.plan == "shelve":
            self.task_state = s.SHELVING_IMAGE_PENDING_UPLOAD

    @event("PoweredOn")
    def record_powered_on(self, user: str, request_id: str, host: str | None) -> None:
        self.power_state = s.RUNNING

    @event("GuestPaused")
    def record_paused(self, user: str, request_id: str, host: str | None) -> None:
        self.power_state = s.POWER_PAUSED

    @event("GuestUnpaused")
    def record_unpaused(self, user: str, request_id: str, host: str | None) -> None:
        self.power_state = s.RUNNING

    @event("GuestSuspended")
    def record_suspended(self, user: str, request_id: str, host: str | None) -> None:
        self.power_state = s.POWER_SUSPENDED

    @event("GuestResumed")
    def record_resumed(self, user: str, request_id: str, host: str | None) -> None:
        self.power_state = s.RUNNING

    @event("Snapshotted")
    def record_snapshotted(
        self, user: str, request_id: str, host: str | None, image_id: str, image_name: str,
        size: int,
    ) -> None:
        self.shelved_image_id = image_id
        self.pending_image_id = None
        self.task_state = s.SHELVING_IMAGE_UPLOADING

    @event("NetworkCleaned")
    def record_network_cleaned(self, user: str, request_id: str, host: str | None) -> None:
        self.network_host = None
        self.network_cleaned = True

    @event("Destroyed")
    def record_destroyed(self, user: str, request_id: str, host: str | None) -> None:
        if self.plan == "shelve_offload" and self.shelved_host is None:
            self.shelved_host = self.host  # volume-backed shelve never passed `Shelved`
        self.host = None
        self.destroyed = True
        self.power_state = s.NOSTATE

    @event("LeftOnHost")
    def record_left_on_host(
        self, user: str, request_id: str, host: str, step: str, reason: str
    ) -> None:
        """A delete goes on without the host (unreachable, or removed): whatever the
        instance has there (domain, disk, DHCP entry) is left for `reconcile`. `step` is
        the step that could not reach it."""
        self.host = self.network_host = None
        self.destroyed = self.network_cleaned = True
        self.power_state = s.NOSTATE
        self.done_in_plan.append(plans.POWER_OFF)

    @event("ClaimReleased")
    def record_claim_released(self, user: str, request_id: str, host: str | None) -> None:
        self.claim_host = None

    @event("ResourcesClaimed")
    def record_claimed(self, user: str, request_id: str, host: str) -> None:
        self.claim_host = host
        self.destroyed = self.network_cleaned = False
        if self.plan == "create":
            self.task_state = s.NETWORKING
        elif self.plan == "unshelve_offloaded":
            self.task_state = s.SPAWNING

    @event("NetworkSetUp")
    def record_network_set_up(self, user: str, request_id: str, host: str) -> None:
        self.network_host = host
        if self.plan == "create":
            self.task_state = s.SPAWNING

    @event("Spawned")
    def record_spawned(
        self, user: str, request_id: str, host: str, image_id: str | None,
        volume: str | None, machine: str | None = None,
    ) -> None:
        self.machine = machine or getattr(self, "machine", None)
        self.host = host
        self.power_state = s.RUNNING

    @event("ImageDeleted")
    def record_image_deleted(self, user: str, request_id: str, image_id: str) -> None:
        self.shelved_image_id = None
        self.pending_image_id = None

    @event("VolumeDeleted")
    def record_volume_deleted(self, user: str, request_id: str, volume: str) -> None:
        self.volume_deleted = True

    @event("StepFailed")
    def record_step_failed(
        self, user: str, request_id: str, step: str, error: str, host: str | None,
        rollback_plan: str, final_vm_state: str,
    ) -> None:
        self.fault = {"step": step, "message": error, "host": host}
        self.plan = rollback_plan
        self.final_vm_state = final_vm_state
        self.done_in_plan = []

    # ---- closing events (FINISH) ------------------------------------------------------

    def record_finish(self, user: str, request_id: str, at: datetime) -> None:
        """Record the closing event of the current plan (every step of it is done)."""
        plan = self.plan
        if plan in ("shelve", "shelve_offload"):
            closer = self._shelved if plan == "shelve" else self._shelve_offloaded
            closer(user=user, request_id=request_id, at=at)
        elif plan in ("undo_spawn", "undo_snapshot", "abort"):
            self._rolled_back(
                user=user, request_id=request_id, vm_state=self.final_vm_state or self.vm_state
            )
        else:
            {
                "create": self._booted, "start": self._started, "stop": self._stopped,
                "pause": self._paused, "unpause": self._unpaused, "suspend": self._suspended,
                "resume": self._resumed, "unshelve_in_place": self._unshelved,
                "unshelve_offloaded": self._unshelved, "delete": self._deleted,
            }[plan or ""](user=user, request_id=request_id)

    @event("Booted")
    def _booted(self, user: str, request_id: str) -> None:
        self._end(s.ACTIVE)

    @event("Started")
    def _started(self, user: str, request_id: str) -> None:
        self._end(s.ACTIVE)

    @event("Stopped")
    def _stopped(self, user: str, request_id: str) -> None:
        self._end(s.STOPPED)

    @event("Paused")
    def _paused(self, user: str, request_id: str) -> None:
        self._end(s.PAUSED)

    @event("Unpaused")
    def _unpaused(self, user: str, request_id: str) -> None:
        self._end(s.ACTIVE)

    @event("Suspended")
    def _suspended(self, user: str, request_id: str) -> None:
        self._end(s.SUSPENDED)

    @event("Resumed")
    def _resumed(self, user: str, request_id: str) -> None:
        self._end(s.ACTIVE)

    @event("Shelved")
    def _shelved(self, user: str, request_id: str, at: datetime) -> None:
        self.shelved_at = at
        self.shelved_host = self.host
        self._end(s.SHELVED)

    @event("ShelveOffloaded")
    def _shelve_offloaded(self, user: str, request_id: str, at: datetime) -> None:
        if self.shelved_at is None:  # volume-backed: shelved and offloaded in one go
            self.shelved_at = at
        self._end(s.SHELVED_OFFLOADED)

    @event("Unshelved")
    def _unshelved(self, user: str, request_id: str) -> None:
        self.shelved_at = self.shelved_image_id = self.shelved_host = None
        self._end(s.ACTIVE)

    @event("Deleted")
    def _deleted(self, user: str, request_id: str) -> None:
        self._end(s.DELETED)

    @event("RolledBack")
    def _rolled_back(self, user: str, request_id: str, vm_state: str) -> None:
        self._end(vm_state)

    def _end(self, vm_state: str) -> None:
        self.vm_state = vm_state
        self.task_state = None
        self.plan = None

    # ---- queries --------------------------------------------------------------------

    def next_step(self) -> str | None:
        return plans.next_step(self)
