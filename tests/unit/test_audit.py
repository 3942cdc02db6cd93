"""The audit trail (Nova's instance actions) rebuilt from real events, and the small
aggregates that keep resources, names and addresses unique."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from domain import plans
from domain import states as s
from domain.errors import Conflict, NoRoom
from domain.host import HostCatalog
from domain.registry import GATEWAY, NETWORK, AddressBlock, NameIndex, mac_for
from projections.audit import actions_from_history, event_record
from tests.unit.test_plans import USER, Life, life_in, make_host


def history_of(life: Life) -> list[dict[str, Any]]:
    return [event_record(event) for event in life.events]


def actions_of(life: Life) -> list[dict[str, Any]]:
    return actions_from_history(history_of(life))


def step_names(action: dict[str, Any]) -> list[str]:
    return [event["event"] for event in action["events"]]


# ================================================================================
# Actions
# ================================================================================


def test_actions_are_named_as_nova_names_them() -> None:
    life = Life.boot_requested()
    life.drive()
    for action in ("stop", "shelve", "shelveOffload", "unshelve", "delete"):
        life.do(action, request_id=f"req-{action}")
    actions = actions_of(life)
    assert [a["action"] for a in actions] == [
        "create", "stop", "shelve", "shelveOffload", "unshelve", "delete"]
    assert [a["request_id"] for a in actions][1:] == [
        "req-stop", "req-shelve", "req-shelveOffload", "req-unshelve", "req-delete"]
    for action in actions:
        assert action["result"] == "Success"
        assert action["user"] == USER
        assert action["start_time"] is not None and action["finish_time"] is not None
        assert action["start_time"] <= action["finish_time"]
        assert all(event["result"] == "Success" for event in action["events"])


def test_action_events_are_the_steps_performed() -> None:
    life = life_in(s.SHELVED)
    life.do("shelveOffload", request_id="req-off")
    (offload,) = [a for a in actions_of(life) if a["request_id"] == "req-off"]
    assert step_names(offload) == ["PowerOff", "CleanNetwork", "Destroy", "ReleaseClaim"]
    for event in offload["events"]:
        assert set(event) >= {"event", "start_time", "finish_time", "result", "host", "details"}
        assert event["start_time"] <= event["finish_time"]
        assert event["host"] == "h1"
        assert event["details"] is None


def test_shelve_with_offload_in_the_same_request_is_one_shelve_action() -> None:
    life = life_in(s.ACTIVE)
    life.do("shelve", request_id="req-shelve")
    life.inst.request_shelve_offload(USER, "req-shelve", "shelve")  # shelved_offload_time 0
    life.collect()
    life.drive()
    assert life.inst.vm_state == s.SHELVED_OFFLOADED
    actions = actions_of(life)
    assert [a["action"] for a in actions] == ["create", "shelve"]
    shelve = actions[1]
    assert step_names(shelve) == [
        "PowerOff", "Snapshot", "PowerOff", "CleanNetwork", "Destroy", "ReleaseClaim"]
    assert shelve["result"] == "Success"


def test_timer_offload_is_its_own_shelve_offload_action() -> None:
    life = life_in(s.SHELVED)
    life.inst.request_shelve_offload("shelf", "req-timer", "shelveOffload")
    life.collect()
    life.drive()
    timer = actions_of(life)[-1]
    assert (timer["action"], timer["user"], timer["request_id"]) == (
        "shelveOffload", "shelf", "req-timer")


@pytest.mark.parametrize("start", [s.SHELVED, s.SHELVED_OFFLOADED])
def test_scenario_25_actions_of_a_deleted_shelved_instance(start: str) -> None:
    life = life_in(s.ACTIVE)
    life.do("shelve")
    if start == s.SHELVED_OFFLOADED:  # offloaded as part of the shelve (offload time 0)
        life.inst.request_shelve_offload(USER, life.inst.request_id or "", "shelve")
        life.collect()
        life.drive()
    life.do("delete")
    assert [a["action"] for a in actions_of(life)] == ["create", "shelve", "delete"]


def test_step_failed_is_an_error_event_and_the_action_result_is_error() -> None:
    life = life_in(s.ACTIVE)
    life.do("shelve", request_id="req-shelve", fail_at=plans.SNAPSHOT, error="export failed")
    shelve = actions_of(life)[-1]
    assert shelve["action"] == "shelve"
    assert shelve["result"] == "Error"
    failed = [event for event in shelve["events"] if event["result"] == "Error"]
    assert [(e["event"], e["details"]) for e in failed] == [("Snapshot", "export failed")]
    assert failed[0]["host"] == "h1"
    assert shelve["finish_time"] is not None  # the rollback closed the action


def test_scenario_21_spawn_failure_shows_in_the_unshelve_action() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    life.do("unshelve", fail_at=plans.SPAWN, error="qemu died")
    unshelve = actions_of(life)[-1]
    assert (unshelve["action"], unshelve["result"]) == ("unshelve", "Error")
    errors = [(e["event"], e["details"]) for e in unshelve["events"] if e["result"] == "Error"]
    assert errors == [("Spawn", "qemu died")]


def test_scenario_23_no_room_reason_is_in_the_audit() -> None:
    reason = "No valid host was found. There are not enough hosts available."
    life = life_in(s.SHELVED_OFFLOADED)
    life.do("unshelve", fail_at=plans.CLAIM, error=reason)
    unshelve = actions_of(life)[-1]
    assert unshelve["result"] == "Error"
    assert [(e["event"], e["details"]) for e in unshelve["events"]] == [("Claim", reason)]


def test_create_failure_is_an_error_create_action() -> None:
    life = life_in(s.ERROR)
    (create,) = actions_of(life)
    assert (create["action"], create["result"]) == ("create", "Error")


def test_the_audit_trail_is_the_same_however_often_it_is_rebuilt() -> None:
    life = life_in(s.SHELVED_OFFLOADED)
    assert actions_of(life) == actions_of(life)


def test_event_record_carries_user_request_and_fields() -> None:
    life = life_in(s.SHELVED)
    records = history_of(life)
    assert [r["version"] for r in records] == list(range(1, len(records) + 1))
    shelved = next(r for r in records if r["event"] == "Snapshotted")
    assert shelved["user"] == USER and shelved["request_id"]
    assert shelved["image_name"] == "vm1-shelved"
    assert shelved["image_id"] == life.inst.shelved_image_id


# ================================================================================
# Host claims
# ================================================================================


@pytest.mark.parametrize(
    "need", [(5, 1024, 10), (1, 4097, 10), (1, 1024, 41)], ids=["vcpus", "memory", "disk"]
)
def test_claim_beyond_free_capacity_raises_no_room_and_records_nothing(
    need: tuple[int, int, int],
) -> None:
    host = make_host("h1", vcpus=4, memory_mb=4096, disk_gb=40)
    with pytest.raises(NoRoom):
        host.claim("i1", *need, user=USER, request_id="req-1")
    assert list(host.collect_events()) == []
    assert host.claims == {}
    assert host.used() == {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}


def test_claim_counts_against_what_is_already_claimed() -> None:
    host = make_host("h1", vcpus=4, memory_mb=4096, disk_gb=40)
    host.claim("i1", 2, 3072, 20, USER, "req-1")  # exactly up to ...
    host.claim("i2", 2, 1024, 20, USER, "req-2")  # ... the whole host
    assert host.free() == {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}
    host.collect_events()
    with pytest.raises(NoRoom):
        host.claim("i3", 1, 1, 1, USER, "req-3")
    assert list(host.collect_events()) == []


def test_claim_twice_by_the_same_instance_is_a_no_op() -> None:
    host = make_host("h1", vcpus=4, memory_mb=4096, disk_gb=40)
    host.claim("i1", 1, 1024, 10, USER, "req-1")
    assert len(host.collect_events()) == 1
    host.claim("i1", 1, 1024, 10, USER, "req-1")
    assert list(host.collect_events()) == []
    assert host.used() == {"vcpus": 1, "memory_mb": 1024, "disk_gb": 10}


def test_release_frees_the_claim() -> None:
    host = make_host("h1", vcpus=4, memory_mb=4096, disk_gb=40)
    host.claim("i1", 4, 4096, 40, USER, "req-1")
    host.release("i1", USER, "req-2")
    assert host.used() == {"vcpus": 0, "memory_mb": 0, "disk_gb": 0}
    host.collect_events()
    host.release("i1", USER, "req-3")  # releasing again changes nothing
    assert list(host.collect_events()) == []
    host.claim("i2", 4, 4096, 40, USER, "req-4")  # the room is there again
    assert host.used()["memory_mb"] == 4096


def test_host_catalog_lists_each_name_once() -> None:
    catalog = HostCatalog()
    for name in ("h1", "h2", "h1"):
        catalog.register(name)
    assert catalog.names == ["h1", "h2"]


# ================================================================================
# Names and addresses
# ================================================================================


def test_name_index_refuses_a_taken_name_and_allows_it_after_free() -> None:
    index = NameIndex(name="vm1", instance_id="i1")
    index.collect_events()
    with pytest.raises(Conflict):
        index.take("i2")
    assert list(index.collect_events()) == []
    assert index.instance_id == "i1"
    index.free("i2")  # only the holder frees it
    assert index.instance_id == "i1"
    index.free("i1")
    assert index.instance_id is None
    index.take("i2")
    assert index.instance_id == "i2"


def test_address_blocks_give_unique_addresses_in_the_network() -> None:
    ips = []
    for block in (AddressBlock(block=0), AddressBlock(block=7), AddressBlock(block=255)):
        while (ip := block.allocate("i")) is not None:
            ips.append(ip)
    assert len(ips) == 3 * 256 - 3  # all but the network, the gateway and the broadcast
    assert len(set(ips)) == len(ips)
    for ip in ips:
        address = ipaddress.ip_address(ip)
        assert address in NETWORK
        assert address not in (NETWORK.network_address, GATEWAY, NETWORK.broadcast_address)


def test_address_pool_never_hands_out_an_address_in_use() -> None:
    pool = AddressBlock(block=3)
    first = [pool.allocate(f"i{n}") for n in range(5)]
    pool.release(first[2], "i2")
    pool.release(first[3], "someone-else")  # not the holder: stays allocated
    more = [pool.allocate(f"j{n}") for n in range(5)]
    in_use = [ip for ip in first if ip != first[2]] + more
    assert len(set(in_use)) == len(in_use)


def test_mac_for_is_unique_per_ip() -> None:
    macs = {mac_for(str(ip)) for ip in NETWORK.hosts()}
    assert len(macs) == NETWORK.num_addresses - 2
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac_for("10.213.0.2"))
    assert mac_for("10.213.0.2") == "52:54:00:d5:00:02"
