"""On libvirt's test driver: how a power-off ended is recorded and shown, `console-log`
refuses cleanly where there is no log, and `host add --virt-type` is validated. (The
console log itself and a real guest's clean shutdown: tests/e2e/test_real_guest.py.)"""

from __future__ import annotations

from typing import Any

from domain.process_manager import Settings

WAIT = ("--wait", "--timeout", "60")


def _power_off_details(h: Any) -> list[str]:
    actions = h.ok("actions", "vm1", "--json").json()
    return [e["details"] for a in actions for e in a["events"] if e["event"] == "PowerOff"]


def test_how_each_power_off_ended_is_recorded(harness_factory: Any) -> None:
    h = harness_factory(settings=Settings(shutdown_timeout=5))
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256", "--disk-gb",
         "1", *WAIT)
    h.ok("stop", "vm1", *WAIT)  # the test driver's guests obey ACPI at once
    h.ok("shelve", "vm1", *WAIT)  # off already, for the shelve and for its offload
    assert _power_off_details(h) == ["clean shutdown", "was off already", "was off already"]
    history = h.ok("history", "vm1", "--json").json()
    assert [r["shutdown"] for r in history if r["event"] == "PoweredOff"] == [
        "clean", "off", "off"]
    audit = h.ok("audit", "--events", "--format", "json", "--action", "stop").json()
    assert [e["details"] for e in audit[0]["events"]] == ["clean shutdown"]
    assert "PowerOff" in h.ok("actions", "vm1").out and "clean shutdown" in h.ok(
        "actions", "vm1").out


def test_console_log_without_a_log(harness_factory: Any) -> None:
    h = harness_factory()
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256", "--disk-gb",
         "1", *WAIT)
    missing = h.shelf("console-log", "vm1")  # the test driver runs no guest: no log
    assert (missing.code, missing.out) == (3, "")
    assert "has no console log yet" in missing.err and len(missing.err.splitlines()) == 1
    assert h.shelf("console-log", "vm1", "--lines", "0").code == 2
    assert h.shelf("console-log", "nosuch").code == 3
    h.ok("shelve", "vm1", *WAIT)  # offloaded: on no host
    gone = h.shelf("console-log", "vm1")
    assert gone.code == 3 and "on no host" in gone.err


def test_host_add_takes_only_known_virt_types(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    h.add_host("h1")
    bad = h.shelf("host", "add", "h9", "--uri", "qemu:///system", "--virt-type", "xen",
                  "--vcpus", "1", "--memory-mb", "64", "--disk-gb", "1")
    assert bad.code == 2 and len(bad.err.splitlines()) == 1
    assert [host["name"] for host in h.ok("host", "list", "--json").json()] == ["h1"]
