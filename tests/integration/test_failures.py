"""`error` failpoints for each failure outcome of lifecycle.md, through the real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WAIT = ("--wait", "--timeout", "60")


def offloaded_vm(harness_factory: Any, hosts: Any) -> Any:
    h = harness_factory(hosts=hosts)
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
         "--disk-gb", "1", *WAIT)
    h.ok("shelve", "vm1", *WAIT)
    h.stop_worker()
    return h


def restart_with(harness_factory: Any, hosts: Any, failpoints: str) -> Any:
    return harness_factory(hosts=hosts, failpoints=failpoints)


def test_snapshot_fails_ends_stopped_without_an_image(harness_factory: Any, hosts: Any) -> None:
    h = restart_with(harness_factory, hosts, "before:Snapshot=error")
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
         "--disk-gb", "1", *WAIT)
    result = h.shelf("shelve", "vm1", *WAIT)
    assert result.code == 1 and "Snapshot" in result.err
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["task_state"], vm["fault"]["step"]) == ("stopped", None,
                                                                      "Snapshot")
    assert h.images() == []
    shelve = h.ok("actions", "vm1", "--json").json()[-1]
    failed = [e for e in shelve["events"] if e["result"] == "Error"]
    assert shelve["result"] == "Error" and failed[0]["event"] == "Snapshot"
    assert "failpoint" in failed[0]["details"]


def test_spawn_fails_back_to_offloaded_with_image_kept(harness_factory: Any,
                                                      hosts: Any) -> None:
    offloaded_vm(harness_factory, hosts)
    h = restart_with(harness_factory, hosts, "before:Spawn=error")
    assert h.shelf("unshelve", "vm1", *WAIT).code == 1
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["host"], vm["task_state"]) == ("shelved_offloaded", None, None)
    assert vm["shelved_image_id"] and len(h.images()) == 1
    assert h.hosts()["h1"]["memory_mb_used"] == 0  # the claim was released
    assert h.driver("h1").dhcp_hosts() == {}


def test_missing_image_at_unshelve_is_an_error(harness_factory: Any, hosts: Any,
                                               tmp_path: Path) -> None:
    h = offloaded_vm(harness_factory, hosts)
    image_id = h.show("vm1")["shelved_image_id"]
    for vanished in (tmp_path / "data" / "images").glob(f"{image_id}.*"):
        vanished.unlink()  # removed behind the store's back (by hand, another tool)
    h = restart_with(harness_factory, hosts, "")
    assert h.shelf("unshelve", "vm1", *WAIT).code == 1
    vm = h.show("vm1")
    assert vm["vm_state"] == "error"
    assert vm["fault"]["message"] == (
        f"Unshelve attempted but the image {image_id} cannot be found."
    )
    assert h.hosts()["h1"]["memory_mb_used"] == 0


def test_a_failed_offload_is_not_tried_again_by_itself(harness_factory: Any,
                                                       hosts: Any) -> None:
    """Offload at once (time 0) failing at Destroy: the instance stays shelved with the
    fault instead of being offloaded again and again; asking again offloads it."""
    h = restart_with(harness_factory, hosts, "before:Destroy=error")
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
         "--disk-gb", "1", *WAIT)
    assert h.shelf("shelve", "vm1", *WAIT).code == 1
    history = h.ok("history", "vm1", "--json").json()
    for _ in range(2):  # the worker's offload timer looks every second; the second look
        h.wait_for_offload_timer()  # starts after the first has handed on what it found
    h.wait_until_idle()
    assert h.ok("history", "vm1", "--json").json() == history
    vm = h.show("vm1")
    assert (vm["vm_state"], vm["task_state"], vm["fault"]["step"]) == ("shelved", None,
                                                                      "Destroy")
    h.stop_worker()
    h = restart_with(harness_factory, hosts, "")
    h.ok("shelve-offload", "vm1", *WAIT)
    assert h.show("vm1")["vm_state"] == "shelved_offloaded"
