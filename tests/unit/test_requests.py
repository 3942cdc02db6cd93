"""docs/lifecycle.md "Which requests are accepted", every row against every vm_state.

Each vm_state is reached through recorded events (see `life_in` in test_plans.py). A
refused request must raise Conflict with Nova's message and record nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain import plans
from domain import states as s
from domain.errors import Conflict, NotFound
from domain.instance import Instance
from domain.registry import NameIndex
from domain.service import LifecycleService, RecordConflict
from tests.unit.test_plans import OPERATIONS, USER, Life, apply_request, life_in

STATES = [
    s.BUILDING, s.ACTIVE, s.STOPPED, s.PAUSED, s.SUSPENDED, s.SHELVED, s.SHELVED_OFFLOADED,
    s.ERROR,
]

# label -> (action, host asked for)
REQUESTS: dict[str, tuple[str, str | None]] = {
    "shelve": ("shelve", None),
    "shelveOffload": ("shelveOffload", None),
    "unshelve": ("unshelve", None),
    "unshelve-to-host": ("unshelve", "h2"),
    "start": ("start", None),
    "stop": ("stop", None),
    "pause": ("pause", None),
    "unpause": ("unpause", None),
    "suspend": ("suspend", None),
    "resume": ("resume", None),
    "delete": ("delete", None),
}

# The table of lifecycle.md, written out from the page (not from the code).
ACCEPTED_FROM: dict[str, set[str]] = {
    "shelve": {s.ACTIVE, s.STOPPED, s.PAUSED, s.SUSPENDED},
    "shelveOffload": {s.SHELVED},
    "unshelve": {s.SHELVED, s.SHELVED_OFFLOADED},
    "unshelve-to-host": {s.SHELVED_OFFLOADED},
    "start": {s.STOPPED},
    "stop": {s.ACTIVE, s.PAUSED, s.SUSPENDED},
    "pause": {s.ACTIVE},
    "unpause": {s.PAUSED},
    "suspend": {s.ACTIVE},
    "resume": {s.SUSPENDED},
    "delete": set(STATES),  # any state
}

TASK_OF: dict[str, str] = {
    "shelve": s.SHELVING,
    "shelveOffload": s.SHELVING_OFFLOADING,
    "unshelve": s.UNSHELVING,
    "unshelve-to-host": s.UNSHELVING,
    "start": s.POWERING_ON,
    "stop": s.POWERING_OFF,
    "pause": s.PAUSING,
    "unpause": s.UNPAUSING,
    "suspend": s.SUSPENDING,
    "resume": s.RESUMING,
    "delete": s.DELETING,
}

# Request events lifecycle.md names.
EVENT_OF: dict[str, str] = {
    "shelve": "ShelveRequested",
    "shelveOffload": "ShelveOffloadRequested",
    "unshelve": "UnshelveRequested",
    "unshelve-to-host": "UnshelveRequested",
}


def nova_message(action: str, inst: Instance) -> str:
    return f"Cannot '{action}' instance {inst.id} while it is in vm_state {inst.vm_state}"


def assert_refused(inst: Instance, action: str, host: str | None = None) -> Conflict:
    """Conflict, and no event recorded, nothing changed."""
    before = (inst.version, inst.vm_state, inst.task_state, inst.plan, inst.fault)
    assert list(inst.collect_events()) == []
    with pytest.raises(Conflict) as refused:
        apply_request(inst, action, USER, "req-refused", host)
    assert list(inst.collect_events()) == []
    assert (inst.version, inst.vm_state, inst.task_state, inst.plan, inst.fault) == before
    assert refused.value.exit_code == 4
    return refused.value


def assert_accepted(life: Life, label: str) -> list[Any]:
    action, host = REQUESTS[label]
    inst = life.inst
    version, vm_state = inst.version, inst.vm_state
    recs = life.request(action, host=host)
    assert len(recs) == 1
    assert inst.version == version + 1
    assert inst.task_state == TASK_OF[label]
    assert inst.vm_state == vm_state  # a request changes the task, not the vm_state
    if label in EVENT_OF:
        assert recs[0].name == EVENT_OF[label]
    return [rec.event for rec in recs]


# ================================================================================
# The table, every row x every vm_state
# ================================================================================


@pytest.mark.parametrize("vm_state", STATES)
@pytest.mark.parametrize("label", list(REQUESTS))
def test_request_table(label: str, vm_state: str) -> None:
    life = life_in(vm_state)
    inst = life.inst
    action, host = REQUESTS[label]
    if vm_state in ACCEPTED_FROM[label]:
        assert_accepted(life, label)
        return
    error = assert_refused(inst, action, host)
    if label == "unshelve-to-host" and vm_state == s.SHELVED:
        assert "SHELVED_OFFLOADED" in str(error)  # "must be SHELVED_OFFLOADED"
    elif inst.task_state is not None:
        # `building` is only ever reached with task `scheduling` in flight: the message
        # must still name the action, the instance and its vm_state in Nova's words.
        assert str(error).startswith(nova_message(action, inst))
    else:
        assert str(error) == nova_message(action, inst)


@pytest.mark.parametrize("label", [label for label in REQUESTS if label != "delete"])
def test_building_instance_idle_accepts_nothing_but_delete(label: str) -> None:
    """The table by vm_state alone: `building` is in no row's accepted list."""
    life = life_in(s.BUILDING)
    # No recorded event leaves an instance `building` with no task in flight: the only way
    # to check the vm_state half of the guard on its own is to clear the task by hand.
    life.inst.task_state = None
    action, host = REQUESTS[label]
    error = assert_refused(life.inst, action, host)
    assert str(error) == nova_message(action, life.inst)


@pytest.mark.parametrize("vm_state", [s.ACTIVE, s.STOPPED, s.PAUSED, s.SUSPENDED])
def test_volume_backed_shelve_is_planned_straight_to_offload(vm_state: str) -> None:
    life = life_in(vm_state, volume_backed=True)
    (event,) = life.request("shelve")
    assert event.name == "ShelveRequested"
    inst = life.inst
    assert inst.task_state == s.SHELVING_OFFLOADING
    assert inst.pending_image_id is None and inst.shelved_image_id is None  # no image id
    assert event.event.image_id is None
    assert plans.SNAPSHOT not in plans.steps_of(inst.plan or "")


def test_image_backed_shelve_is_planned_with_a_snapshot() -> None:
    life = life_in(s.ACTIVE)
    (event,) = life.request("shelve")
    assert life.inst.task_state == s.SHELVING
    assert event.event.image_id is not None
    assert plans.SNAPSHOT in plans.steps_of(life.inst.plan or "")


@pytest.mark.parametrize(
    ("vm_state", "status"),
    [
        (s.BUILDING, "BUILD"), (s.ACTIVE, "ACTIVE"), (s.STOPPED, "SHUTOFF"),
        (s.PAUSED, "PAUSED"), (s.SUSPENDED, "SUSPENDED"), (s.SHELVED, "SHELVED"),
        (s.SHELVED_OFFLOADED, "SHELVED_OFFLOADED"), (s.ERROR, "ERROR"),
    ],
)
def test_status_shows_novas_api_names(vm_state: str, status: str) -> None:
    assert life_in(vm_state).inst.status == status


def test_deleted_status() -> None:
    life = life_in(s.ACTIVE)
    life.do("delete")
    assert life.inst.status == "DELETED"


@pytest.mark.parametrize("label", [label for label in REQUESTS if label != "delete"])
def test_a_deleted_instance_accepts_nothing(label: str) -> None:
    life = life_in(s.ACTIVE)
    life.do("delete")
    action, host = REQUESTS[label]
    error = assert_refused(life.inst, action, host)
    assert str(error) == nova_message(action, life.inst)


# ================================================================================
# Scenarios 1-7
# ================================================================================


@pytest.mark.parametrize("vm_state", [s.ACTIVE, s.STOPPED, s.PAUSED, s.SUSPENDED])
def test_scenario_1_shelve_accepted(vm_state: str) -> None:
    life = life_in(vm_state)
    (event,) = assert_accepted(life, "shelve")
    assert (event.user, life.inst.action) == (USER, "shelve")


@pytest.mark.parametrize("vm_state", [s.BUILDING, s.SHELVED, s.SHELVED_OFFLOADED, s.ERROR])
def test_scenario_2_3_shelve_refused(vm_state: str) -> None:
    inst = life_in(vm_state).inst
    assert_refused(inst, "shelve")


def test_scenario_3_shelved_shelve_message_is_novas() -> None:
    inst = life_in(s.SHELVED).inst
    error = assert_refused(inst, "shelve")
    assert str(error) == f"Cannot 'shelve' instance {inst.id} while it is in vm_state shelved"


@pytest.mark.parametrize("vm_state", [state for state in STATES if state != s.SHELVED])
def test_scenario_5_shelve_offload_refused(vm_state: str) -> None:
    assert_refused(life_in(vm_state).inst, "shelveOffload")


def test_scenario_6_active_unshelve_refused() -> None:
    inst = life_in(s.ACTIVE).inst
    error = assert_refused(inst, "unshelve")
    assert str(error) == f"Cannot 'unshelve' instance {inst.id} while it is in vm_state active"


def test_scenario_7_unshelve_to_a_host_when_only_shelved() -> None:
    inst = life_in(s.SHELVED).inst
    error = assert_refused(inst, "unshelve", host="h2")
    assert "SHELVED_OFFLOADED" in str(error)
    assert "must be SHELVED_OFFLOADED" in str(error)


def test_unshelve_to_a_host_from_offloaded_is_accepted() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    assert_accepted(life, "unshelve-to-host")
    assert life.inst.target_host == "h2"


# ================================================================================
# Scenario 4: a task in flight refuses every request (delete aside)
# ================================================================================


def _in_flight_points() -> list[tuple[str, int]]:
    """(operation, events recorded after its request) for every point a task is in flight."""
    points = []
    for name, operation in sorted(OPERATIONS.items()):
        life, at = operation.begin()
        done = 0
        while life.inst.task_state is not None:
            points.append((name, done))
            operation.step(life, at)
            done += 1
    return points


IN_FLIGHT = _in_flight_points()


def _at_point(name: str, done: int) -> Life:
    operation = OPERATIONS[name]
    life, at = operation.begin()
    for _ in range(done):
        operation.step(life, at)
    assert life.inst.task_state is not None
    return life


@pytest.mark.parametrize(("operation", "done"), IN_FLIGHT, ids=[f"{o}-{d}" for o, d in IN_FLIGHT])
def test_scenario_4_task_in_flight_refuses_every_request(operation: str, done: int) -> None:
    for label, (action, host) in REQUESTS.items():
        if label == "delete":
            continue
        inst = _at_point(operation, done).inst
        error = assert_refused(inst, action, host)
        assert str(error).startswith(nova_message(action, inst)), label


NOT_DELETING = [(o, d) for o, d in IN_FLIGHT if not o.startswith("delete")]
DELETING = [(o, d) for o, d in IN_FLIGHT if o.startswith("delete")]


@pytest.mark.parametrize(
    ("operation", "done"), NOT_DELETING, ids=[f"{o}-{d}" for o, d in NOT_DELETING]
)
def test_delete_is_accepted_while_another_task_is_in_flight(operation: str, done: int) -> None:
    life = _at_point(operation, done)
    assert_accepted(life, "delete")
    life.drive()
    inst = life.inst
    # ... and the delete leaves nothing behind.
    assert (inst.vm_state, inst.task_state) == (s.DELETED, None)
    assert inst.host is None and inst.claim_host is None and inst.network_host is None
    assert inst.shelved_image_id is None and inst.pending_image_id is None
    assert all(host.used()["memory_mb"] == 0 for host in life.hosts.values())


def test_delete_while_deleting_is_not_refused() -> None:
    """lifecycle.md: delete is accepted from any state; its "otherwise" column is "—"."""
    refused = []
    for operation, done in DELETING:
        life = _at_point(operation, done)
        try:
            apply_request(life.inst, "delete", USER, "req-delete-again")
        except Conflict as error:
            refused.append(f"{operation}-{done}: {error}")
        assert life.inst.task_state == s.DELETING
    assert refused == []


# ================================================================================
# Through the service: not found, nothing stored on refusal, races (scenarios 2, 6, 26)
# ================================================================================


def _replay_any(events: list[Any]) -> Any:
    aggregate: Any = None
    for recorded in events:
        aggregate = recorded.mutate(aggregate)
    return aggregate


class MemoryRepo:
    """An in-memory event store with optimistic concurrency on each aggregate's version."""

    def __init__(self) -> None:
        self.streams: dict[uuid.UUID, list[Any]] = {}
        self.before_save: list[Any] = []

    def get(self, aggregate_id: uuid.UUID) -> Any:
        if aggregate_id not in self.streams:
            raise KeyError(aggregate_id)
        return _replay_any(self.streams[aggregate_id])

    def save(self, *aggregates: Any) -> None:
        while self.before_save:
            self.before_save.pop(0)()
        pending = [(aggregate.id, list(aggregate.collect_events())) for aggregate in aggregates]
        for aggregate_id, events in pending:
            stored = len(self.streams.get(aggregate_id, []))
            if events and events[0].originator_version != stored + 1:
                raise RecordConflict(f"version {events[0].originator_version} taken")
        for aggregate_id, events in pending:
            self.streams.setdefault(aggregate_id, []).extend(events)


def _stored(vm_state: str) -> tuple[MemoryRepo, Instance]:
    life = life_in(vm_state)
    repo = MemoryRepo()
    repo.streams[life.inst.id] = life.events
    repo.save(NameIndex(name=life.inst.name, instance_id=str(life.inst.id)))
    return repo, life.inst


@pytest.mark.parametrize("ref", ["by-id", "by-name"])
def test_service_refusal_stores_no_event(ref: str) -> None:
    repo, inst = _stored(s.SHELVED)
    before = list(repo.streams[inst.id])
    with pytest.raises(Conflict) as refused:
        LifecycleService(repo).request(
            "shelve", str(inst.id) if ref == "by-id" else inst.name, USER, "req-x")
    assert refused.value.exit_code == 4
    assert str(refused.value) == (
        f"Cannot 'shelve' instance {inst.id} while it is in vm_state shelved")
    assert repo.streams[inst.id] == before


def test_service_accepts_and_stores_the_request() -> None:
    repo, inst = _stored(s.ACTIVE)
    LifecycleService(repo).request("shelve", inst.name, USER, "req-shelve")
    last = repo.streams[inst.id][-1]
    assert type(last).__name__ == "ShelveRequested"
    assert (last.user, last.request_id) == (USER, "req-shelve")
    assert repo.get(inst.id).task_state == s.SHELVING


@pytest.mark.parametrize("ref", [str(uuid.uuid4()), "no-such-vm"])
def test_scenario_6_unknown_instance_is_not_found(ref: str) -> None:
    repo, _ = _stored(s.SHELVED)
    with pytest.raises(NotFound) as missing:
        LifecycleService(repo).request("unshelve", ref, USER, "req-x")
    assert missing.value.exit_code == 3


@pytest.mark.parametrize(("first", "second"), [("shelve", "shelve"), ("stop", "shelve")])
def test_scenario_26_two_racing_requests_exactly_one_wins(first: str, second: str) -> None:
    repo, inst = _stored(s.ACTIVE)
    service = LifecycleService(repo)
    before = len(repo.streams[inst.id])
    # The second request is recorded while the first has loaded the instance but not saved.
    repo.before_save.append(lambda: service.request(second, inst.name, "bob", "req-b"))
    with pytest.raises(Conflict) as lost:
        service.request(first, inst.name, USER, "req-a")
    assert lost.value.exit_code == 4
    new = repo.streams[inst.id][before:]
    assert [event.request_id for event in new] == ["req-b"]
