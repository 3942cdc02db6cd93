"""End to end with a real Linux guest (scripts/build-guest-image.sh) on qemu:///system under
TCG (`--virt-type qemu`: this machine's /dev/kvm can't run a stock kernel): the guest takes
the instance's own address by DHCP, powers off cleanly when shelved (recorded so), and
what it wrote on its disk (its boot counter) survives shelve, unshelve in place, offload
and unshelve on another host."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from bench.guest_image import (
    BOOT_LINE,
    BOUND_LINE,
    MEMORY_MB,
    SHUTDOWN_LINE,
    GuestImages,
    console_text,
    wait_for_console,
)
from tests.e2e.test_qemu import Cloud, _clean_up, _require_libvirtd, _wait_idle, shelf_domains

pytestmark = pytest.mark.e2e

# serve's defaults (60 s clean-shutdown timeout) but no automatic offload, so the console
# log of a shelved guest can be read before offload removes it.
KEEP_SHELVED = ("--shelved-offload-time", "-1")


class GuestCloud(Cloud):
    """Two TCG hosts on qemu:///system and the guest images."""

    def __init__(self, store: str, root: Path) -> None:
        super().__init__(store, root)
        self.other_host = f"{self.host}-b"

    def console(self, instance_id: str, host: str) -> Path:
        return self.root / "data" / "hosts" / host / "console" / f"{instance_id}.log"

    def boot(self, image: str) -> tuple[str, Path]:
        instance_id = self.shelf("boot", "vm1", "--host", self.host, "--vcpus", "1",
                                 "--memory-mb", str(MEMORY_MB), "--disk-gb", "1",
                                 "--image", image, "--wait").stdout.strip()
        return instance_id, self.console(instance_id, self.host)

    def hardware(self, instance_id: str) -> tuple[str | None, str | None]:
        """The machine type and CPU model of the instance's domain, as libvirt holds it."""
        conn = libvirt.open("qemu:///system")
        try:
            xml = ET.fromstring(conn.lookupByName(f"shelf-{instance_id}").XMLDesc(0))
        finally:
            conn.close()
        return xml.find("os/type").get("machine"), xml.findtext("cpu/model")  # type: ignore[union-attr]

    def power_off_details(self) -> str:
        """What the last PowerOff step of vm1 says (from `actions --json`)."""
        actions = json.loads(self.shelf("actions", "vm1", "--json").stdout)
        steps = [e for a in actions for e in a["events"] if e["event"] == "PowerOff"]
        return str(steps[-1]["details"])


@pytest.fixture
def guest_cloud(store_url: str, guest: GuestImages) -> Iterator[GuestCloud]:
    _require_libvirtd()
    root = Path(f"/var/tmp/shelf-e2e-{uuid.uuid4().hex[:8]}")
    root.mkdir(parents=True)
    made = GuestCloud(store_url, root)
    for host in (made.host, made.other_host):
        made.shelf("host", "add", host, "--uri", "qemu:///system", "--virt-type", "qemu",
                   "--vcpus", "2", "--memory-mb", "1024", "--disk-gb", "5")
    made.shelf("image", "import", "guest", str(guest.listens))
    made.shelf("image", "import", "guest-ignores-acpi", str(guest.ignores_acpi))
    yield made
    _clean_up(made)
    shutil.rmtree(root, ignore_errors=True)


def _bound_after(console: Path, after: int) -> str:
    return wait_for_console(console, BOUND_LINE, after)


def test_guest_survives_shelve_unshelve_in_place_offload_and_another_host(
    guest_cloud: GuestCloud,
) -> None:
    cloud = guest_cloud
    cloud.serve(options=KEEP_SHELVED)
    instance_id, console = cloud.boot("guest")
    ip = cloud.show("vm1")["ip"]
    assert wait_for_console(console, BOOT_LINE) == "1"
    assert _bound_after(console, 0) == ip  # the DHCP host entry gave it the instance's IP
    assert "shelf-guest: boot 1" in cloud.shelf("console-log", "vm1").stdout
    machine, cpu = cloud.hardware(instance_id)
    assert machine is not None and machine != "pc" and cpu == "qemu64"  # a versioned type

    # Shelve: a clean ACPI shutdown, recorded as such; the log survives the power-off.
    cloud.shelf("shelve", "vm1", "--wait")
    assert cloud.show("vm1")["vm_state"] == "shelved"
    assert SHUTDOWN_LINE in console_text(console)
    assert cloud.power_off_details() == "clean shutdown"
    assert len(cloud.shelf("console-log", "vm1", "--lines", "1").stdout.splitlines()) == 1

    # Unshelve in place: the same domain boots its own disk again, the image goes.
    image_id = cloud.show("vm1")["shelved_image_id"]
    seen = len(console_text(console))
    cloud.shelf("unshelve", "vm1", "--wait")
    assert wait_for_console(console, BOOT_LINE, seen) == "2"
    assert _bound_after(console, seen) == ip
    assert not cloud.image_file(image_id).exists()

    # Shelve, offload, unshelve on the other host: boot 3 there, same address.
    cloud.shelf("shelve", "vm1", "--wait")
    assert cloud.power_off_details() == "clean shutdown"
    cloud.shelf("shelve-offload", "vm1", "--wait")
    vm = cloud.show("vm1")
    assert vm["vm_state"] == "shelved_offloaded"
    assert not console.exists() and not cloud.disk_of(instance_id).exists()
    assert cloud.shelf("console-log", "vm1", check=False).returncode == 3
    image_id = vm["shelved_image_id"]
    cloud.shelf("unshelve", "vm1", "--host", cloud.other_host, "--wait")
    vm = cloud.show("vm1")
    assert (vm["host"], vm["power_state"]) == (cloud.other_host, "running")
    new_console = cloud.console(instance_id, cloud.other_host)
    assert wait_for_console(new_console, BOOT_LINE) == "3"
    assert _bound_after(new_console, 0) == ip
    assert cloud.hardware(instance_id) == (machine, cpu)  # recorded at the first spawn
    spawns = [r for r in json.loads(cloud.shelf("history", "vm1", "--json").stdout)
              if r["event"] == "Spawned"]
    assert [r["machine"] for r in spawns] == [machine, machine]
    assert not cloud.image_file(image_id).exists()
    assert not cloud.disk_of(instance_id).exists()  # the first host's disk
    assert instance_id in shelf_domains()  # once, on the other host
    assert cloud.shelf("reconcile", check=False).returncode == 0


def test_guest_ignoring_acpi_is_destroyed_after_the_timeout(guest_cloud: GuestCloud) -> None:
    cloud = guest_cloud
    cloud.serve(options=(*KEEP_SHELVED, "--shutdown-timeout", "3",
                         "--shutdown-retry-interval", "1"))
    _, console = cloud.boot("guest-ignores-acpi")
    wait_for_console(console, "shelf-guest: ignoring ACPI")
    assert _bound_after(console, 0) == cloud.show("vm1")["ip"]
    cloud.shelf("shelve", "vm1", "--wait")
    assert cloud.show("vm1")["vm_state"] == "shelved"
    assert SHUTDOWN_LINE not in console_text(console)
    assert cloud.power_off_details() == "destroyed after the clean-shutdown timeout"
    audit: list[dict[str, Any]] = json.loads(
        cloud.shelf("audit", "--action", "shelve", "--events", "--format", "json").stdout
    )
    power_offs = [e for a in audit for e in a["events"] if e["event"] == "PowerOff"]
    assert [e["details"] for e in power_offs] == ["destroyed after the clean-shutdown timeout"]
    assert re.search(r"PowerOff\s+Success\s+\S+\s+destroyed after",
                     cloud.shelf("actions", "vm1").stdout)


def _wait_for_task(cloud: GuestCloud, task_state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while cloud.show("vm1")["task_state"] != task_state:
        assert time.monotonic() < deadline, f"vm1 never reached task {task_state}"
        time.sleep(0.2)


@pytest.mark.parametrize("kill", ["during-clean-shutdown-wait", "after:Snapshot"])
def test_serve_killed_mid_shelve_resumes_and_the_guest_comes_back(
    guest_cloud: GuestCloud, kill: str
) -> None:
    """The crash matrix's real-qemu subset with the real guest: `serve` killed -9 while it
    waits for the guest's clean shutdown (a guest that ignores ACPI, so the wait is long),
    or by the `crash` failpoint after the snapshot; a restarted `serve` finishes the
    shelve, and the guest unshelved on the other host has its data and its address."""
    cloud = guest_cloud
    waiting = kill == "during-clean-shutdown-wait"
    killed = cloud.serve("" if waiting else f"{kill}=crash",
                         options=("--shutdown-timeout", "600") if waiting else ())
    instance_id, console = cloud.boot("guest-ignores-acpi" if waiting else "guest")
    ip = cloud.show("vm1")["ip"]
    assert _bound_after(console, 0) == ip
    cloud.shelf("shelve", "vm1")
    if waiting:
        _wait_for_task(cloud, "shelving")
        time.sleep(2)  # well inside the 600 s wait (no assert rests on it)
        killed.kill()
    assert killed.wait(timeout=300) in (137, -9), (cloud.root / "serve.log").read_text()[-3000:]
    assert cloud.show("vm1")["task_state"] is not None

    cloud.serve()  # 3 s clean-shutdown timeout, no failpoints
    _wait_idle(cloud)
    vm = cloud.show("vm1")
    assert (vm["vm_state"], vm["fault"]) == ("shelved_offloaded", None)
    cloud.shelf("unshelve", "vm1", "--host", cloud.other_host, "--wait")
    new_console = cloud.console(instance_id, cloud.other_host)
    assert wait_for_console(new_console, BOOT_LINE) == "2"
    assert _bound_after(new_console, 0) == ip
    assert cloud.shelf("reconcile", check=False).returncode == 0
