"""Leave qemu:///system as a test found it: whatever refers to the test's own directory
(domains, pools) and the DHCP entries of its MACs go, each step on its own, so one that
fails (or a store the test broke) does not keep the others from running."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

import libvirt

URI = "qemu:///system"
NETWORK = "shelf-net"


def remove_test_artifacts(root: Path, macs: Iterable[str] = ()) -> None:
    conn = libvirt.open(URI)
    try:
        found = set(macs) | _remove_domains(conn, str(root))
        _remove_dhcp_entries(conn, found)
        _remove_pools(conn, str(root))
    finally:
        conn.close()


def _remove_domains(conn: libvirt.virConnect, root: str) -> set[str]:
    """Undefine the domains whose XML mentions root; return their MACs."""
    macs: set[str] = set()
    for domain in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            xml = domain.XMLDesc(0)
            if root not in xml:
                continue
            macs.update(re.findall(r"<mac address='([0-9a-f:]+)'", xml))
            if domain.isActive():
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    return macs


def _remove_dhcp_entries(conn: libvirt.virConnect, macs: set[str]) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        network = conn.networkLookupByName(NETWORK)
        present = set(re.findall(r"<host mac='([0-9a-f:]+)'", network.XMLDesc(0)))
        for mac in sorted(present & {mac.lower() for mac in macs}):
            with contextlib.suppress(libvirt.libvirtError):
                network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                               libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
                               f"<host mac='{mac}'/>",
                               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                               | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)


def _remove_pools(conn: libvirt.virConnect, root: str) -> None:
    for pool in conn.listAllStoragePools(0):
        with contextlib.suppress(libvirt.libvirtError):
            if root not in pool.XMLDesc(0):
                continue
            persistent = pool.isPersistent()  # a transient pool is gone once destroyed
            if pool.isActive():
                pool.destroy()
            if persistent:
                pool.undefine()
