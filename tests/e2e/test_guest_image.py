"""The guest image on its own, booted by libvirt without shelf: it boots from its own disk,
counts its boots on its root filesystem, takes an address by DHCP (QEMU's user network,
so nothing outside this test's domain is touched), and powers off on the ACPI power
button unless built to ignore it."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from bench.guest_image import (
    BOOT_LINE,
    BOUND_LINE,
    MEMORY_MB,
    SHUTDOWN_LINE,
    GuestImages,
    boot_count,
    wait_for_console,
)
from tests.e2e.test_qemu import _require_libvirtd

pytestmark = pytest.mark.e2e


def _domain_xml(name: str, disk: Path, console: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name><memory unit='MiB'>{MEMORY_MB}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <interface type='user'><model type='virtio'/><rom enabled='no'/></interface>
    <serial type='file'><source path='{console}'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


@pytest.fixture
def scratch() -> Iterator[Path]:
    _require_libvirtd()
    folder = Path(f"/var/tmp/shelf-guest-test-{uuid.uuid4().hex[:8]}")
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _boot(conn: libvirt.virConnect, disk: Path, console: Path) -> libvirt.virDomain:
    name = f"shelf-guest-test-{uuid.uuid4().hex[:8]}"
    return conn.createXML(_domain_xml(name, disk, console), 0)  # transient: gone when off


def _running(conn: libvirt.virConnect, name: str) -> bool:
    return name in {domain.name() for domain in conn.listAllDomains()}


def _wait_off(conn: libvirt.virConnect, name: str) -> None:
    deadline = time.monotonic() + 120
    while _running(conn, name):
        assert time.monotonic() < deadline, f"{name} did not power off"
        time.sleep(0.1)


def test_guest_boots_counts_binds_and_powers_off(guest: GuestImages, scratch: Path) -> None:
    disk = scratch / "disk.qcow2"
    shutil.copy(guest.listens, disk)
    conn = libvirt.open("qemu:///system")
    try:
        for expected_boot in (1, 2):
            console = scratch / f"console-{expected_boot}.log"
            domain = _boot(conn, disk, console)
            try:
                assert wait_for_console(console, BOOT_LINE) == str(expected_boot)
                assert wait_for_console(console, BOUND_LINE) == "10.0.2.15"
                domain.shutdown()  # the ACPI power button
                wait_for_console(console, SHUTDOWN_LINE)
                _wait_off(conn, domain.name())
            finally:
                if _running(conn, domain.name()):
                    domain.destroy()
        assert boot_count(disk) == 2
    finally:
        conn.close()


def test_variant_ignores_the_power_button(guest: GuestImages, scratch: Path) -> None:
    disk, console = scratch / "disk.qcow2", scratch / "console.log"
    shutil.copy(guest.ignores_acpi, disk)
    conn = libvirt.open("qemu:///system")
    try:
        domain = _boot(conn, disk, console)
        try:
            wait_for_console(console, "shelf-guest: ignoring ACPI")
            assert wait_for_console(console, BOUND_LINE) == "10.0.2.15"
        finally:
            domain.destroy()
    finally:
        conn.close()
