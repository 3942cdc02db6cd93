"""The whole lifecycle through the real CLI and worker, on libvirt's test driver, on SQLite
and on PostgreSQL (every test here runs on both stores)."""

from __future__ import annotations

from typing import Any

from application.identity import operating_system_user
from domain.process_manager import Settings

WAIT = ("--wait", "--timeout", "60")


def boot(h: Any, name: str, host: str = "h1", *extra: str, memory: int = 1024) -> str:
    out = h.ok("boot", name, "--host", host, "--vcpus", "2", "--memory-mb", str(memory),
               "--disk-gb", "10", *extra, *WAIT).out
    return str(out.strip())


def event_names(h: Any, ref: str) -> list[str]:
    return [record["event"] for record in h.ok("history", ref, "--json").json()]


def test_shelve_offload_unshelve_cycle(harness_factory: Any) -> None:
    h = harness_factory(Settings(shelved_offload_time=-1, shutdown_timeout=2))
    h.add_host("h1")
    h.add_host("h2")
    instance_id = boot(h, "vm1")
    vm = h.show("vm1")
    assert (vm["status"], vm["host"], vm["task_state"]) == ("ACTIVE", "h1", None)
    mac, ip = vm["mac"], vm["ip"]
    assert h.driver("h1").dhcp_hosts() == {mac: ip}

    h.ok("shelve", "vm1", *WAIT)
    vm = h.show(instance_id)
    assert (vm["vm_state"], vm["task_state"], vm["shelved_host"]) == ("shelved", None, "h1")
    assert vm["shelved_at"] and vm["shelved_image_id"]
    images = h.images()
    assert [image["name"] for image in images] == ["vm1-shelved"]
    assert images[0]["id"] == vm["shelved_image_id"]
    assert h.hosts()["h1"]["memory_mb_used"] == 1024  # a shelved instance keeps its room

    h.ok("shelve-offload", "vm1", *WAIT)
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["host"], vm["status"]) == ("shelved_offloaded", None,
                                                          "SHELVED_OFFLOADED")
    usage = h.hosts()["h1"]
    assert (usage["vcpus_used"], usage["memory_mb_used"], usage["disk_gb_used"]) == (0, 0, 0)
    driver = h.driver("h1")
    assert instance_id not in driver.domains()
    assert instance_id not in driver.disks()
    assert mac not in driver.dhcp_hosts()
    assert [image["name"] for image in h.images()] == ["vm1-shelved"]  # the image is kept

    h.ok("unshelve", "vm1", *WAIT)
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["task_state"], vm["power_state"]) == ("active", None, "running")
    assert vm["host"] in ("h1", "h2")
    assert (vm["shelved_at"], vm["shelved_image_id"], vm["shelved_host"]) == (None, None, None)
    assert h.images() == []
    assert h.driver(vm["host"]).dhcp_hosts() == {mac: ip}  # same address on the new host
    assert instance_id in h.driver(vm["host"]).domains()
    assert h.hosts()[vm["host"]]["memory_mb_used"] == 1024

    names = event_names(h, "vm1")
    expected_shelve = ["ShelveRequested", "PoweredOff", "Snapshotted", "Shelved"]
    expected_offload = ["ShelveOffloadRequested", "PoweredOff", "NetworkCleaned", "Destroyed",
                        "ClaimReleased", "ShelveOffloaded"]
    expected_unshelve = ["UnshelveRequested", "ResourcesClaimed", "NetworkSetUp", "Spawned",
                         "ImageDeleted", "Unshelved"]
    assert names[-16:] == expected_shelve + expected_offload + expected_unshelve
    actions = [action["action"] for action in h.ok("actions", "vm1", "--json").json()]
    assert actions == ["create", "shelve", "shelveOffload", "unshelve"]


def test_default_offload_is_at_once(harness_factory: Any) -> None:
    h = harness_factory()  # shelved_offload_time 0, as Nova's default
    h.add_host("h1")
    boot(h, "vm1")
    h.ok("shelve", "vm1", *WAIT)
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["host"], vm["shelved_host"]) == ("shelved_offloaded", None, "h1")
    assert h.hosts()["h1"]["memory_mb_used"] == 0
    assert [image["name"] for image in h.images()] == ["vm1-shelved"]
    actions = h.ok("actions", "vm1", "--json").json()
    assert [action["action"] for action in actions] == ["create", "shelve"]
    steps = [event["event"] for event in actions[1]["events"]]
    assert steps == ["PowerOff", "Snapshot", "PowerOff", "CleanNetwork", "Destroy",
                     "ReleaseClaim"]


def test_volume_backed_skips_snapshot_and_keeps_its_volume(harness_factory: Any) -> None:
    h = harness_factory(Settings(shelved_offload_time=-1, shutdown_timeout=2))
    h.add_host("h1")
    h.add_host("h2")
    instance_id = boot(h, "vol1", "h1", "--volume-backed")
    volume = h.tmp / "data" / "volumes" / f"{instance_id}.qcow2"
    assert volume.exists()

    h.ok("shelve", "vol1", *WAIT)  # even with offload -1: straight to offloaded
    vm = h.show("vol1")
    assert (vm["vm_state"], vm["host"]) == ("shelved_offloaded", None)
    assert vm["shelved_image_id"] is None and h.images() == []
    assert volume.exists()
    assert "Snapshotted" not in event_names(h, "vol1")

    h.ok("unshelve", "vol1", "--host", "h2", *WAIT)
    vm = h.show("vol1")
    assert (vm["vm_state"], vm["host"]) == ("active", "h2")
    spawned = [r for r in h.ok("history", "vol1", "--json").json() if r["event"] == "Spawned"]
    assert {r["volume"] for r in spawned} == {str(volume)}  # the same volume, both times


def test_unshelve_without_room_stays_offloaded_with_fault(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1", cpus=4, memory_mb=4096)
    boot(h, "big", memory=3072)
    h.ok("shelve", "big", *WAIT)
    boot(h, "squatter", memory=2048)  # takes the room back while `big` is offloaded
    result = h.shelf("unshelve", "big", *WAIT)
    assert result.code == 1
    assert "No valid host was found" in result.err
    vm = h.show("big")
    assert (vm["vm_state"], vm["task_state"]) == ("shelved_offloaded", None)
    assert "No valid host" in vm["fault"]["message"]
    assert vm["shelved_image_id"] is not None  # still unshelvable later
    usage = h.hosts()["h1"]
    assert usage["memory_mb_used"] == 2048
    unshelve = h.ok("actions", "big", "--json").json()[-1]
    assert (unshelve["action"], unshelve["result"]) == ("unshelve", "Error")
    assert unshelve["events"][-1]["event"] == "Claim"


def test_unshelve_to_named_host_and_placement_by_free_memory(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1", memory_mb=8192)
    h.add_host("h2", memory_mb=16384)
    h.add_host("h3", memory_mb=4096)
    boot(h, "a")
    boot(h, "b")
    h.ok("shelve", "a", *WAIT)
    h.ok("shelve", "b", *WAIT)
    h.ok("unshelve", "a", "--host", "h3", *WAIT)
    assert h.show("a")["host"] == "h3"
    h.ok("unshelve", "b", *WAIT)
    assert h.show("b")["host"] == "h2"  # the most free memory
    usage = h.hosts()
    assert (usage["h1"]["memory_mb_used"], usage["h2"]["memory_mb_used"],
            usage["h3"]["memory_mb_used"]) == (0, 1024, 1024)


def test_unshelve_in_place_and_delete_of_shelved(harness_factory: Any) -> None:
    h = harness_factory(Settings(shelved_offload_time=-1, shutdown_timeout=2))
    h.add_host("h1")
    boot(h, "vm1")
    h.ok("shelve", "vm1", *WAIT)
    h.ok("unshelve", "vm1", *WAIT)
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["host"], vm["shelved_image_id"]) == ("active", "h1", None)
    assert h.images() == []

    instance_id = vm["id"]
    h.ok("shelve", "vm1", *WAIT)
    h.ok("delete", "vm1", *WAIT)
    assert h.shelf("show", "vm1").code == 3  # the name is free again
    deleted = h.show(instance_id)
    assert deleted["vm_state"] == "deleted"
    driver = h.driver("h1")
    assert instance_id not in driver.domains() and instance_id not in driver.disks()
    assert driver.dhcp_hosts() == {}
    assert h.hosts()["h1"]["memory_mb_used"] == 0
    assert h.images() == []
    actions = [a["action"] for a in h.ok("actions", instance_id, "--json").json()]
    assert actions == ["create", "shelve", "unshelve", "shelve", "delete"]


def test_power_actions(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    boot(h, "vm1")
    for action, vm_state, power in (
        ("pause", "paused", "paused"), ("unpause", "active", "running"),
        ("suspend", "suspended", "suspended"), ("resume", "active", "running"),
        ("stop", "stopped", "shutdown"), ("start", "active", "running"),
    ):
        h.ok(action, "vm1", *WAIT)
        vm = h.show("vm1")
        assert (vm["vm_state"], vm["power_state"]) == (vm_state, power), action
        assert h.driver("h1").power_state(vm["id"]) == power


def test_refusals_and_exit_codes(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    instance_id = boot(h, "vm1")
    refused = h.shelf("shelve-offload", "vm1")
    assert refused.code == 4
    assert refused.err.strip() == (
        f"shelf: Cannot 'shelveOffload' instance {instance_id} while it is in vm_state active"
    )
    assert h.shelf("unshelve", "vm1").code == 4
    assert h.shelf("show", "nope").code == 3
    assert h.shelf("unshelve", "nope").code == 3
    assert h.shelf("boot", "x", "--host", "ghost", "--vcpus", "1", "--memory-mb", "1",
                   "--disk-gb", "1").code == 3
    assert h.shelf("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "1",
                   "--disk-gb", "1").code == 4  # the name is taken
    usage = h.shelf("boot", "x", "--host", "h1", "--vcpus", "many")
    assert usage.code == 2 and len(usage.err.strip().splitlines()) == 1
    assert "Traceback" not in usage.err


def test_history_records_user_and_request(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    boot(h, "vm1")
    history = h.ok("history", "vm1", "--json").json()
    assert history[0]["event"] == "BootRequested"
    assert [r["version"] for r in history] == list(range(1, len(history) + 1))
    who = operating_system_user()  # the CLI records whom it runs as
    assert all(r["user"] == who and r["request_id"].startswith("req-") for r in history)
    assert all(r["timestamp"] for r in history)


def test_spawn_failure_on_boot_ends_in_error(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    result = h.shelf("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "512",
                     "--disk-gb", "1", "--image", "no-such-image", *WAIT)
    assert result.code == 3  # refused before anything is recorded
    assert h.ok("list", "--json").json() == []


def test_placement_sees_room_that_an_offload_just_released(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1", memory_mb=16384)
    h.add_host("h2", memory_mb=8192)
    h.ok("boot", "x", "--host", "h2", "--vcpus", "1", "--memory-mb", "1024", "--disk-gb", "1",
         *WAIT)
    h.ok("shelve", "x", *WAIT)
    h.ok("boot", "big", "--host", "h1", "--vcpus", "1", "--memory-mb", "12288",
         "--disk-gb", "1", *WAIT)
    h.ok("unshelve", "x", *WAIT)  # h1 has 4096 MB free, h2 8192: h2
    assert h.show("x")["host"] == "h2"
    h.ok("shelve", "big", *WAIT)  # offloaded: h1 has all 16384 free again
    h.ok("shelve", "x", *WAIT)
    h.ok("unshelve", "x", *WAIT)  # the worker must see both releases: h1
    assert h.show("x")["host"] == "h1"
