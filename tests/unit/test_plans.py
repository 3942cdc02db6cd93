"""Step sequences and failure outcomes of docs/lifecycle.md, at the domain level (no I/O).

The `Life` helper below plays the process manager's part without a hypervisor: it asks
`plans.next_step(instance)` and records the step's result with the matching `record_*`
method (and claims/releases on in-memory `Host` aggregates), exactly as
domain/process_manager.py records them. The other unit test modules import it from here.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from application.placement import HostRanking
from application.step_recording import StepRecorder
from domain import plans
from domain import states as s
from domain.errors import NoRoom
from domain.host import Host
from domain.instance import Instance
from domain.process_manager import ProcessManager, Settings
from domain.service import apply_request  # the service's own dispatch, not a copy

USER = "alice"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MAX_STEPS = 40
_request_ids = itertools.count(1)


def new_request_id() -> str:
    return f"req-{next(_request_ids)}"


@dataclass(frozen=True)
class Rec:
    """One recorded event and what the instance looked like right after it."""

    event: Any
    vm_state: str
    task_state: str | None
    host: str | None
    claim_host: str | None
    usage_mb: dict[str, int]

    @property
    def name(self) -> str:
        return type(self.event).__name__


def names(recs: Sequence[Rec]) -> list[str]:
    return [rec.name for rec in recs]


def replay(events: Sequence[Any]) -> Instance:
    """A fresh aggregate rebuilt from recorded events only (what a restarted worker loads)."""
    aggregate: Any = None
    for recorded in events:
        aggregate = recorded.mutate(aggregate)
    assert isinstance(aggregate, Instance)
    return aggregate


def make_host(name: str, vcpus: int = 8, memory_mb: int = 8192, disk_gb: int = 100) -> Host:
    host = Host(name=name, uri=f"test:///{name}", vcpus=vcpus, memory_mb=memory_mb,
                disk_gb=disk_gb, user="admin", request_id="req-host")
    host.collect_events()
    return host




@dataclass
class Life:
    """An instance, its whole recorded history, and the hosts it may claim on."""

    inst: Instance
    hosts: dict[str, Host] = field(default_factory=dict)
    history: list[Rec] = field(default_factory=list)

    @classmethod
    def boot_requested(
        cls, *, volume_backed: bool = False, name: str = "vm1", host: str = "h1",
        hosts: dict[str, Host] | None = None,
    ) -> Life:
        inst = Instance(
            id=uuid.uuid4(), name=name, host=host, vcpus=1, memory_mb=512, disk_gb=1,
            image_id=None if volume_backed else "base-image", volume_backed=volume_backed,
            ip="10.213.0.2", mac="52:54:00:d5:00:02", user=USER, request_id=new_request_id(),
            project_id="admin", user_id=USER, flavor=None,
        )
        life = cls(inst, hosts if hosts is not None else {"h1": make_host("h1"),
                                                           "h2": make_host("h2")})
        life.collect()
        return life

    @property
    def events(self) -> list[Any]:
        return [rec.event for rec in self.history]

    def collect(self) -> list[Rec]:
        usage = {name: host.used()["memory_mb"] for name, host in self.hosts.items()}
        new = [
            Rec(event, self.inst.vm_state, self.inst.task_state, self.inst.host,
                self.inst.claim_host, usage)
            for event in self.inst.collect_events()
        ]
        self.history.extend(new)
        return new

    # ---- requests -------------------------------------------------------------------

    def request(
        self, action: str, *, host: str | None = None, request_id: str | None = None,
        user: str = USER,
    ) -> list[Rec]:
        apply_request(self.inst, action, user, request_id or new_request_id(), host)
        return self.collect()

    def do(self, action: str, *, host: str | None = None, request_id: str | None = None,
           **drive: Any) -> list[Rec]:
        """Request and drive to the end: the request event and every step's event."""
        return self.request(action, host=host, request_id=request_id) + self.drive(**drive)

    # ---- steps ----------------------------------------------------------------------

    def step(
        self, *, fail: bool = False, error: str = "boom", image_missing: bool = False,
        pick_host: str = "h1",
    ) -> list[Rec]:
        """Perform (or, with `fail`, fail) the next step; the events it recorded."""
        step = plans.next_step(self.inst)
        if step is None:
            return []
        if fail:
            self.fail(step, error, image_missing)
        else:
            try:
                self.perform(step, pick_host)
            except NoRoom as no_room:  # as the process manager does at Claim
                self.fail(step, str(no_room), False)
        return self.collect()

    def drive(
        self, *, fail_at: str | None = None, error: str = "boom", image_missing: bool = False,
        pick_host: str = "h1",
    ) -> list[Rec]:
        """Perform next_step until idle; the first time `fail_at` comes up it fails."""
        recorded: list[Rec] = []
        failed = False
        for _ in range(MAX_STEPS):
            step = plans.next_step(self.inst)
            if step is None:
                return recorded
            fail = step == fail_at and not failed
            failed = failed or fail
            recorded += self.step(fail=fail, error=error, image_missing=image_missing,
                                  pick_host=pick_host)
        raise AssertionError(f"plan {self.inst.plan} did not finish: {names(recorded)}")

    def fail(self, step: str, error: str, image_missing: bool) -> None:
        inst = self.inst
        rollback, vm_state = plans.rollback_for(
            inst.plan or "abort", step, inst.vm_state, image_missing
        )
        inst.record_step_failed(
            user=inst.user or "shelf", request_id=inst.request_id or "", step=step,
            error=error, host=inst.host or inst.claim_host, rollback_plan=rollback,
            final_vm_state=vm_state,
        )

    def perform(self, step: str, pick_host: str = "h1") -> None:
        """Record the successful result of `step` as domain/process_manager.py does."""
        inst = self.inst
        who: dict[str, Any] = {"user": inst.user or "shelf", "request_id": inst.request_id or ""}
        if step == plans.FINISH:
            inst.record_finish(who["user"], who["request_id"], NOW)
        elif step == plans.POWER_OFF:
            inst.record_powered_off(**who, host=inst.host)
        elif step == plans.POWER_ON:
            inst.record_powered_on(**who, host=inst.host)
        elif step == plans.PAUSE:
            inst.record_paused(**who, host=inst.host)
        elif step == plans.UNPAUSE:
            inst.record_unpaused(**who, host=inst.host)
        elif step == plans.SUSPEND:
            inst.record_suspended(**who, host=inst.host)
        elif step == plans.RESUME:
            inst.record_resumed(**who, host=inst.host)
        elif step == plans.SNAPSHOT:
            assert inst.pending_image_id is not None
            inst.record_snapshotted(
                **who, host=inst.host, image_id=inst.pending_image_id,
                image_name=f"{inst.name}-shelved", size=4096,
            )
        elif step == plans.CLEAN_NETWORK:
            inst.record_network_cleaned(**who, host=inst.network_host or inst.claim_host)
        elif step == plans.DESTROY:
            inst.record_destroyed(**who, host=inst.host or inst.claim_host)
        elif step == plans.RELEASE_CLAIM:
            if inst.claim_host in self.hosts:
                self.hosts[inst.claim_host].release(str(inst.id), **who)
            inst.record_claim_released(**who, host=inst.claim_host)
        elif step == plans.CLAIM:
            name = inst.target_host or pick_host
            self.hosts[name].claim(str(inst.id), inst.vcpus, inst.memory_mb, inst.disk_gb, **who)
            inst.record_claimed(**who, host=name)
        elif step == plans.SETUP_NETWORK:
            assert inst.claim_host is not None
            inst.record_network_set_up(**who, host=inst.claim_host)
        elif step == plans.SPAWN:
            assert inst.claim_host is not None
            inst.record_spawned(
                **who, host=inst.claim_host, image_id=inst.shelved_image_id or inst.image_id,
                volume="/volumes/x" if inst.volume_backed else None,
            )
        elif step == plans.DELETE_IMAGE:
            image_id = inst.shelved_image_id or inst.pending_image_id or ""
            inst.record_image_deleted(**who, image_id=image_id)
        elif step == plans.DELETE_VOLUME:
            inst.record_volume_deleted(**who, volume="/volumes/x")
        else:  # pragma: no cover
            raise AssertionError(f"unknown step {step}")


def life_in(vm_state: str, *, volume_backed: bool = False) -> Life:
    """An instance brought to `vm_state` through recorded events only (no pending events)."""
    life = Life.boot_requested(volume_backed=volume_backed)
    if vm_state == s.BUILDING:
        return life  # note: the only `building` that events reach has task `scheduling`
    if vm_state == s.ERROR:
        life.drive(fail_at=plans.SPAWN, error="spawn failed at boot")
        assert life.inst.vm_state == s.ERROR
        return life
    life.drive()
    assert life.inst.vm_state == s.ACTIVE
    route = {
        s.ACTIVE: [], s.STOPPED: ["stop"], s.PAUSED: ["pause"], s.SUSPENDED: ["suspend"],
        s.SHELVED: ["shelve"], s.SHELVED_OFFLOADED: ["shelve", "shelveOffload"],
    }[vm_state]
    if volume_backed and vm_state == s.SHELVED_OFFLOADED:
        route = ["shelve"]  # volume-backed shelve offloads at once
    for action in route:
        life.do(action)
    assert (life.inst.vm_state, life.inst.task_state) == (vm_state, None)
    return life


# ================================================================================
# Step sequences
# ================================================================================


def test_image_backed_shelve_sequence_and_task_states() -> None:
    life = life_in(s.ACTIVE)
    recs = life.do("shelve")
    assert names(recs) == ["ShelveRequested", "PoweredOff", "Snapshotted", "Shelved"]
    tasks = [rec.task_state for rec in recs]
    assert tasks[0] == s.SHELVING
    # The task passes shelving_image_pending_upload -> shelving_image_uploading, then none.
    distinct = [t for i, t in enumerate(tasks) if i == 0 or t != tasks[i - 1]]
    assert distinct == [
        s.SHELVING, s.SHELVING_IMAGE_PENDING_UPLOAD, s.SHELVING_IMAGE_UPLOADING, None,
    ]
    assert recs[2].task_state == s.SHELVING_IMAGE_UPLOADING  # at `Snapshotted`


def test_image_backed_shelve_records_image_and_shelved_fields() -> None:
    life = life_in(s.ACTIVE)
    recs = life.do("shelve")
    snapshotted = recs[2].event
    assert snapshotted.image_id and snapshotted.size == 4096  # image id and size recorded
    inst = life.inst
    assert (inst.vm_state, inst.task_state) == (s.SHELVED, None)
    assert inst.shelved_at == NOW
    assert inst.shelved_image_id == snapshotted.image_id
    assert inst.shelved_host == "h1"


def test_shelved_instance_still_holds_its_resources_on_the_host() -> None:
    life = life_in(s.ACTIVE)
    recs = life.do("shelve")
    assert "ClaimReleased" not in names(recs)
    assert life.inst.claim_host == "h1"
    assert life.hosts["h1"].used() == {"vcpus": 1, "memory_mb": 512, "disk_gb": 1}


@pytest.mark.parametrize("start", [s.ACTIVE, s.STOPPED, s.PAUSED, s.SUSPENDED])
def test_shelve_from_every_accepted_state_ends_shelved(start: str) -> None:
    life = life_in(start)
    recs = life.do("shelve")
    assert names(recs) == ["ShelveRequested", "PoweredOff", "Snapshotted", "Shelved"]
    assert (life.inst.vm_state, life.inst.task_state) == (s.SHELVED, None)


def test_shelve_offload_sequence_releases_claim_before_offloaded() -> None:
    life = life_in(s.SHELVED)
    image = life.inst.shelved_image_id
    recs = life.do("shelveOffload")
    assert names(recs) == [
        "ShelveOffloadRequested", "PoweredOff", "NetworkCleaned", "Destroyed", "ClaimReleased",
        "ShelveOffloaded",
    ]
    assert recs[0].task_state == s.SHELVING_OFFLOADING
    # The resources are released before the state says offloaded, never after.
    for rec in recs:
        if rec.vm_state == s.SHELVED_OFFLOADED:
            assert rec.claim_host is None
            assert rec.usage_mb["h1"] == 0
    released = names(recs).index("ClaimReleased")
    assert all(rec.vm_state == s.SHELVED for rec in recs[:released + 1])
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host) == (s.SHELVED_OFFLOADED, None, None)
    assert inst.shelved_image_id == image  # the image remains
    assert life.hosts["h1"].used()["memory_mb"] == 0


def test_offload_power_off_is_a_forced_one() -> None:
    life = life_in(s.SHELVED)
    life.request("shelveOffload")
    assert plans.next_step(life.inst) == plans.POWER_OFF
    assert life.inst.plan in plans.FORCED_POWER_OFF_PLANS


def test_shelve_then_offload_in_the_same_request_passes_through_shelved() -> None:
    """Scenario 11 (shelved_offload_time 0): the offload continues the same request."""
    life = life_in(s.ACTIVE)
    request_id = new_request_id()
    recs = life.do("shelve", request_id=request_id)
    life.inst.request_shelve_offload(USER, request_id, "shelve")
    recs += life.collect() + life.drive()
    assert names(recs) == [
        "ShelveRequested", "PoweredOff", "Snapshotted", "Shelved", "ShelveOffloadRequested",
        "PoweredOff", "NetworkCleaned", "Destroyed", "ClaimReleased", "ShelveOffloaded",
    ]
    assert s.SHELVED in [rec.vm_state for rec in recs]
    assert s.SHELVING_OFFLOADING in [rec.task_state for rec in recs]
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host) == (s.SHELVED_OFFLOADED, None, None)
    assert {rec.event.request_id for rec in recs} == {request_id}


def test_volume_backed_shelve_goes_straight_to_offload_without_an_image() -> None:
    life = life_in(s.ACTIVE, volume_backed=True)
    recs = life.do("shelve")
    assert names(recs) == [
        "ShelveRequested", "PoweredOff", "NetworkCleaned", "Destroyed", "ClaimReleased",
        "ShelveOffloaded",
    ]
    assert recs[0].task_state == s.SHELVING_OFFLOADING
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host) == (s.SHELVED_OFFLOADED, None, None)
    assert inst.shelved_image_id is None and inst.pending_image_id is None
    assert inst.shelved_at is not None
    assert life.hosts["h1"].used()["memory_mb"] == 0


def test_unshelve_from_offloaded_sequence() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    image = life.inst.shelved_image_id
    recs = life.do("unshelve", pick_host="h2")
    assert names(recs) == [
        "UnshelveRequested", "ResourcesClaimed", "NetworkSetUp", "Spawned", "ImageDeleted",
        "Unshelved",
    ]
    assert recs[0].task_state == s.UNSHELVING
    assert recs[1].task_state == s.SPAWNING  # host chosen and resources claimed
    assert recs[3].event.image_id == image  # spawned from the shelved image
    assert recs[4].event.image_id == image  # then that image is deleted
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host) == (s.ACTIVE, None, "h2")
    assert (inst.shelved_at, inst.shelved_image_id, inst.shelved_host) == (None, None, None)
    assert life.hosts["h2"].used()["memory_mb"] == 512
    assert life.hosts["h1"].used()["memory_mb"] == 0


def test_unshelve_from_offloaded_to_a_named_host_claims_there() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    recs = life.do("unshelve", host="h2", pick_host="h1")
    assert recs[1].event.host == "h2"
    assert life.inst.host == "h2"


def test_unshelve_from_shelved_powers_on_in_place_then_deletes_the_image() -> None:
    life = life_in(s.SHELVED)
    image = life.inst.shelved_image_id
    recs = life.do("unshelve")
    assert names(recs) == ["UnshelveRequested", "PoweredOn", "ImageDeleted", "Unshelved"]
    assert recs[0].task_state == s.UNSHELVING
    assert recs[2].event.image_id == image
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host) == (s.ACTIVE, None, "h1")
    assert (inst.shelved_at, inst.shelved_image_id, inst.shelved_host) == (None, None, None)


def test_volume_backed_unshelve_spawns_without_an_image() -> None:
    life = life_in(s.SHELVED_OFFLOADED, volume_backed=True)
    recs = life.do("unshelve")
    assert names(recs) == [
        "UnshelveRequested", "ResourcesClaimed", "NetworkSetUp", "Spawned", "Unshelved",
    ]
    assert recs[3].event.volume is not None
    assert (life.inst.vm_state, life.inst.task_state) == (s.ACTIVE, None)


@pytest.mark.parametrize("start", [s.SHELVED, s.SHELVED_OFFLOADED])
def test_delete_of_a_shelved_instance_deletes_its_image_and_claim(start: str) -> None:
    life = life_in(start)
    image = life.inst.shelved_image_id
    recs = life.do("delete")
    assert recs[0].task_state == s.DELETING
    deleted = [rec.event for rec in recs if rec.name == "ImageDeleted"]
    assert [event.image_id for event in deleted] == [image]
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host, inst.claim_host) == (
        s.DELETED, None, None, None)
    assert life.hosts["h1"].used()["memory_mb"] == 0


# ================================================================================
# Failures
# ================================================================================


def test_snapshot_failure_deletes_partial_image_and_ends_stopped() -> None:
    life = life_in(s.ACTIVE)
    recs = life.do("shelve", fail_at=plans.SNAPSHOT, error="disk export failed")
    seq = names(recs)
    assert seq[:3] == ["ShelveRequested", "PoweredOff", "StepFailed"]
    failed = recs[2].event
    assert (failed.step, failed.error) == (plans.SNAPSHOT, "disk export failed")
    assert "ImageDeleted" in seq[3:]  # the partial image is deleted
    assert recs[seq.index("ImageDeleted")].event.image_id  # ... by its id
    inst = life.inst
    assert (inst.vm_state, inst.task_state) == (s.STOPPED, None)
    assert inst.fault is not None and inst.fault["message"] == "disk export failed"
    assert inst.fault["step"] == plans.SNAPSHOT
    assert inst.shelved_image_id is None and inst.pending_image_id is None


def test_spawn_failure_on_unshelve_rolls_back_to_offloaded_and_keeps_the_image() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    image = life.inst.shelved_image_id
    recs = life.do("unshelve", fail_at=plans.SPAWN, error="qemu died")
    seq = names(recs)
    assert seq[:4] == ["UnshelveRequested", "ResourcesClaimed", "NetworkSetUp", "StepFailed"]
    assert {"Destroyed", "NetworkCleaned", "ClaimReleased"} <= set(seq[4:])
    assert "ImageDeleted" not in seq
    inst = life.inst
    assert (inst.vm_state, inst.task_state) == (s.SHELVED_OFFLOADED, None)
    assert inst.host is None and inst.claim_host is None
    assert inst.shelved_image_id == image  # the shelved image is kept
    assert inst.fault is not None and inst.fault["message"] == "qemu died"
    assert life.hosts["h1"].used()["memory_mb"] == 0


def test_missing_image_at_unshelve_ends_in_error() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    message = f"Unshelve attempted but the image {life.inst.shelved_image_id} cannot be found."
    life.do("unshelve", fail_at=plans.SPAWN, error=message, image_missing=True)
    inst = life.inst
    assert (inst.vm_state, inst.task_state) == (s.ERROR, None)
    assert inst.fault is not None and inst.fault["message"] == message


def test_no_room_at_claim_stays_offloaded_with_the_reason_in_the_fault() -> None:
    hosts = {"h1": make_host("h1", memory_mb=1024)}
    life = Life.boot_requested(hosts=hosts)
    life.drive()
    life.do("shelve")
    life.do("shelveOffload")
    image = life.inst.shelved_image_id
    # Another instance takes the room meanwhile.
    hosts["h1"].claim("other", 1, 1024, 1, "bob", "req-other")
    recs = life.do("unshelve")
    assert names(recs)[:2] == ["UnshelveRequested", "StepFailed"]
    assert "ResourcesClaimed" not in names(recs)
    inst = life.inst
    assert (inst.vm_state, inst.task_state, inst.host) == (s.SHELVED_OFFLOADED, None, None)
    assert inst.claim_host is None
    assert inst.shelved_image_id == image
    assert inst.fault is not None and "no room" in inst.fault["message"]
    assert hosts["h1"].used()["memory_mb"] == 1024  # never over-committed


def test_failure_with_no_host_room_reported_by_the_scheduler() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    reason = "No valid host was found. There are not enough hosts available."
    life.do("unshelve", fail_at=plans.CLAIM, error=reason)
    inst = life.inst
    assert (inst.vm_state, inst.task_state) == (s.SHELVED_OFFLOADED, None)
    assert inst.fault is not None and inst.fault["message"] == reason


# ================================================================================
# Crash and resume: the decision depends only on recorded state
# ================================================================================


@dataclass(frozen=True)
class Operation:
    """An operation from a given vm_state (None: the boot itself), possibly failing."""

    start: str | None
    action: str | None
    volume_backed: bool = False
    fail_at: str | None = None
    image_missing: bool = False

    def begin(self) -> tuple[Life, int]:
        """The instance in its start state with the request recorded; index of the request."""
        if self.start is None:
            return Life.boot_requested(volume_backed=self.volume_backed), 0
        life = life_in(self.start, volume_backed=self.volume_backed)
        at = len(life.history)
        assert self.action is not None
        life.request(self.action)
        return life, at

    def step(self, life: Life, since: int) -> list[Rec]:
        """One step, failing at `fail_at` unless the failure is already recorded."""
        failed = "StepFailed" in names(life.history[since:])
        return life.step(fail=not failed and plans.next_step(life.inst) == self.fail_at,
                         image_missing=self.image_missing)

    def finish(self, life: Life, since: int) -> None:
        for _ in range(MAX_STEPS):
            if plans.next_step(life.inst) is None:
                return
            self.step(life, since)
        raise AssertionError("did not finish")


OPERATIONS: dict[str, Operation] = {
    "create": Operation(None, None),
    "create-volume": Operation(None, None, volume_backed=True),
    "create-spawn-fails": Operation(None, None, fail_at=plans.SPAWN),
    "shelve": Operation(s.ACTIVE, "shelve"),
    "shelve-paused": Operation(s.PAUSED, "shelve"),
    "shelve-volume": Operation(s.ACTIVE, "shelve", volume_backed=True),
    "shelve-snapshot-fails": Operation(s.ACTIVE, "shelve", fail_at=plans.SNAPSHOT),
    "shelveOffload": Operation(s.SHELVED, "shelveOffload"),
    "unshelve-offloaded": Operation(s.SHELVED_OFFLOADED, "unshelve"),
    "unshelve-volume": Operation(s.SHELVED_OFFLOADED, "unshelve", volume_backed=True),
    "unshelve-in-place": Operation(s.SHELVED, "unshelve"),
    "unshelve-spawn-fails": Operation(s.SHELVED_OFFLOADED, "unshelve", fail_at=plans.SPAWN),
    "unshelve-image-missing": Operation(
        s.SHELVED_OFFLOADED, "unshelve", fail_at=plans.SPAWN, image_missing=True),
    "unshelve-no-room": Operation(s.SHELVED_OFFLOADED, "unshelve", fail_at=plans.CLAIM),
    "delete-shelved": Operation(s.SHELVED, "delete"),
    "delete-offloaded": Operation(s.SHELVED_OFFLOADED, "delete"),
    "delete-active": Operation(s.ACTIVE, "delete"),
    "stop": Operation(s.ACTIVE, "stop"),
    "start": Operation(s.STOPPED, "start"),
}


def _state(inst: Instance) -> tuple[Any, ...]:
    """What the instance looks like, image ids aside (they derive from the instance id)."""
    return (
        inst.vm_state, inst.task_state, inst.power_state, inst.host, inst.claim_host,
        inst.network_host, inst.shelved_image_id is None, inst.shelved_host, inst.shelved_at,
        inst.pending_image_id is None, inst.plan, inst.fault, inst.done_in_plan, inst.version,
    )


def _uninterrupted(operation: Operation) -> tuple[Life, list[str]]:
    life, at = operation.begin()
    operation.finish(life, at)
    return life, names(life.history[at:])


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_replayed_aggregate_decides_like_the_live_one_at_every_step(name: str) -> None:
    operation = OPERATIONS[name]
    life, at = operation.begin()
    for _ in range(MAX_STEPS):
        fresh = replay(life.events)  # what a restarted worker would load right now
        assert plans.next_step(fresh) == plans.next_step(life.inst)
        assert vars(fresh) == vars(life.inst)
        if plans.next_step(life.inst) is None:
            break
        operation.step(life, at)
    assert life.inst.task_state is None


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_a_worker_restarted_at_any_step_boundary_finishes_the_operation(name: str) -> None:
    """Scenario 28 at the domain level: every step's event appears once, same end state."""
    operation = OPERATIONS[name]
    reference, uninterrupted = _uninterrupted(operation)
    for crash_after in range(1, len(uninterrupted)):
        life, at = operation.begin()
        while len(life.history) - at < crash_after:
            operation.step(life, at)
        # The worker dies here; a new one loads the aggregate from the recorded events only.
        restarted = Life(replay(life.events), life.hosts, list(life.history))
        assert plans.next_step(restarted.inst) == plans.next_step(life.inst)
        operation.finish(restarted, at)
        assert names(restarted.history[at:]) == uninterrupted, f"crash after {crash_after}"
        assert _state(restarted.inst) == _state(reference.inst)
        assert restarted.hosts["h1"].used() == reference.hosts["h1"].used()


# ================================================================================
# The power-off and offload decisions the process manager takes from recorded state
# ================================================================================


class _RecordingDriver:
    def __init__(self) -> None:
        self.power_offs: list[float] = []

    def power_off(self, instance_id: str, clean_timeout: float, retry_interval: float) -> str:
        self.power_offs.append(clean_timeout)
        return "destroyed" if clean_timeout == 0 else "clean"


class _Drivers:
    def __init__(self) -> None:
        self.driver_ = _RecordingDriver()

    def driver(self, name: str) -> _RecordingDriver:
        return self.driver_


class _CollectingRepo:
    """Keeps what the process manager saves; no store behind it."""

    def __init__(self) -> None:
        self.saved: list[Any] = []
        self.transactions: list[list[str]] = []

    def get(self, aggregate_id: uuid.UUID) -> Any:
        raise KeyError(aggregate_id)

    def save(self, *aggregates: Any) -> None:
        batch = [event for aggregate in aggregates for event in aggregate.collect_events()]
        self.saved += batch
        self.transactions.append([type(event).__name__ for event in batch])


def _manager(
    shelved_offload_time: float = -1,
) -> tuple[ProcessManager, _Drivers, _CollectingRepo]:
    drivers, repo = _Drivers(), _CollectingRepo()
    manager = ProcessManager(
        repo=repo, hosts=drivers, images=None, volumes=None,  # type: ignore[arg-type]
        records=StepRecorder(repo), placement=HostRanking(repo),
        settings=Settings(shelved_offload_time=shelved_offload_time, shutdown_timeout=60),
        clock=lambda: NOW,
    )
    return manager, drivers, repo


@pytest.mark.parametrize(
    ("start", "action", "timeout"),
    [
        (s.ACTIVE, "shelve", 60),  # clean shutdown asked for and waited on
        (s.PAUSED, "shelve", 0),  # scenario 10: a paused instance skips the clean wait
        (s.SHELVED, "shelveOffload", 0),  # any offload skips the clean wait
        (s.ACTIVE, "stop", 60),
    ],
)
def test_power_off_waits_for_a_clean_shutdown_unless_paused_or_offloading(
    start: str, action: str, timeout: float
) -> None:
    life = life_in(start)
    life.request(action)
    assert plans.next_step(life.inst) == plans.POWER_OFF
    manager, drivers, _ = _manager()
    manager.power_off(life.inst)
    assert drivers.driver_.power_offs == [timeout]


def test_offload_time_zero_continues_the_shelve_in_the_same_action() -> None:
    life = life_in(s.ACTIVE)
    life.do("shelve", request_id="req-shelve-0")
    manager, _, repo = _manager(shelved_offload_time=0)
    assert manager.offload_if_due(life.inst) is True
    (requested,) = repo.saved
    assert type(requested).__name__ == "ShelveOffloadRequested"
    assert requested.request_id == "req-shelve-0"
    assert life.inst.task_state == s.SHELVING_OFFLOADING


@pytest.mark.parametrize(
    ("offload_time", "shelved_for", "due"),
    [(-1, 10**6, False), (60, 59, False), (60, 61, True)],
)
def test_offload_timer(offload_time: float, shelved_for: int, due: bool) -> None:
    life = life_in(s.SHELVED)
    manager, _, repo = _manager(shelved_offload_time=offload_time)
    manager.clock = lambda: NOW + timedelta(seconds=shelved_for)
    assert manager.offload_if_due(life.inst) is due
    if due:
        (requested,) = repo.saved
        assert requested.action == "shelveOffload"
        assert requested.request_id != life.history[-1].event.request_id
    else:
        assert repo.saved == []


def test_offload_timer_skips_an_instance_whose_task_is_in_flight() -> None:
    """Scenario 15: a shelved instance being unshelved is not offloaded under it."""
    life = life_in(s.SHELVED)
    life.request("unshelve")
    assert (life.inst.vm_state, life.inst.task_state) == (s.SHELVED, s.UNSHELVING)
    manager, _, repo = _manager(shelved_offload_time=0)
    assert manager.offload_if_due(life.inst) is False
    assert repo.saved == []
    assert life.inst.task_state == s.UNSHELVING


@pytest.mark.parametrize("offload_time", [0, -1, 60])
def test_finishing_a_shelve_offloads_at_once_only_with_offload_time_zero(
    offload_time: float,
) -> None:
    """Scenario 11 through the process manager: the same request, the same `shelve` action."""
    life = life_in(s.ACTIVE)
    life.request("shelve", request_id="req-shelve-0")
    while plans.next_step(life.inst) != plans.FINISH:
        life.step()
    manager, _, repo = _manager(shelved_offload_time=offload_time)
    manager.finish(life.inst)
    manager.records.record_unrecorded(life.inst)  # as the drive does, with a later step's or alone
    if offload_time == 0:
        assert repo.transactions == [["Shelved", "ShelveOffloadRequested"]]
        requested = repo.saved[-1]
        assert (requested.request_id, requested.action) == ("req-shelve-0", "shelve")
        assert (life.inst.vm_state, life.inst.task_state) == (s.SHELVED, s.SHELVING_OFFLOADING)
        recs = life.drive()
        assert names(recs)[-1] == "ShelveOffloaded"
        assert (life.inst.vm_state, life.inst.host) == (s.SHELVED_OFFLOADED, None)
    else:
        assert repo.transactions == [["Shelved"]]
        assert (life.inst.vm_state, life.inst.task_state) == (s.SHELVED, None)
