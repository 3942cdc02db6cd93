"""A host's DHCP reservations in the shelf network (`shelf-net`).

Entries are named `<instance name>-sh<tag>` (the store's tag): an entry named with another
store's tag is never changed, and a MAC another store reserved is refused, never taken over.
"""

from __future__ import annotations

import libvirt

from adapters.host_connection import HostConnection, Refusal, is_missing, operation
from adapters.libvirt_xml import (
    NETWORK_NAME,
    DhcpHost,
    dhcp_host_entries,
    dhcp_host_xml,
    is_hostname,
    network_xml,
)
from adapters.logs import get_logger

log = get_logger()


class DhcpMixin(HostConnection):
    """The shelf network and its DHCP host entries, for `LibvirtHost`."""

    def _ensure_network(self) -> None:
        try:
            network = self._conn.networkLookupByName(NETWORK_NAME)
        except libvirt.libvirtError as exc:
            if not is_missing(exc, libvirt.VIR_ERR_NO_NETWORK):
                raise
            network = self._conn.networkDefineXML(network_xml())
            network.setAutostart(1)
            log.info("network defined", host=self.name, network=NETWORK_NAME)
        if not network.isActive():
            network.create()

    @operation("read DHCP hosts of network " + NETWORK_NAME)
    def dhcp_hosts(self) -> dict[str, str]:
        """mac (lower case) -> ip of every DHCP host entry not named by another store."""
        return {e.mac: e.ip for e in self._dhcp_entries() if not self._foreign(e)}

    @operation("read DHCP hosts of network " + NETWORK_NAME)
    def foreign_dhcp_hosts(self) -> dict[str, str]:
        """mac -> ip of the DHCP host entries named by another store."""
        return {e.mac: e.ip for e in self._dhcp_entries() if self._foreign(e)}

    def _foreign(self, entry: DhcpHost) -> bool:
        return self.mark is not None and self.mark.owns_tagged(entry.name) is False

    def _dhcp_entries(self) -> list[DhcpHost]:
        return dhcp_host_entries(self._network().XMLDesc(0))

    def _network(self) -> libvirt.virNetwork:
        return self._conn.networkLookupByName(NETWORK_NAME)

    @operation("add DHCP host {mac} {ip}")
    def add_dhcp_host(self, mac: str, ip: str, name: str) -> None:
        mac = mac.lower()
        entries = self._dhcp_entries()
        mine = [entry for entry in entries if entry.mac == mac]
        if any(self._foreign(entry) for entry in mine):
            # Two stores on one network drew the same address: refuse, never take it over.
            raise Refusal(f"MAC {mac} is reserved by another shelf store on {NETWORK_NAME}")
        if any(entry.ip == ip for entry in mine):
            return
        if mine:  # the mac's old reservation, for another ip
            self._update_dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, dhcp_host_xml(mac))
        taken = {entry.name for entry in entries if entry.mac != mac}
        xml = dhcp_host_xml(mac, ip, self._dhcp_name(name, mac, taken))
        self._update_dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, xml)
        log.info("DHCP host added", host=self.name, mac=mac, ip=ip, stale=len(mine))

    def _dhcp_name(self, name: str, mac: str, taken: set[str | None]) -> str | None:
        """The instance's name, tagged with the store's; libvirt refuses a second entry
        with the same name: then the store's tag on the MAC, or (no store) no name."""
        tagged = self.mark.tagged(name) if self.mark else name
        if is_hostname(tagged) and tagged not in taken:
            return tagged
        return self.mark.tagged("shelf-" + mac.replace(":", "")) if self.mark else None

    @operation("remove DHCP host {mac}")
    def remove_dhcp_host(self, mac: str) -> None:
        mac = mac.lower()
        if any(e.mac == mac and not self._foreign(e) for e in self._dhcp_entries()):
            self._update_dhcp(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, dhcp_host_xml(mac))
            log.info("DHCP host removed", host=self.name, mac=mac)

    def _update_dhcp(self, command: int, xml: str) -> None:
        network = self._network()
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        if network.isActive():
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        network.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml, flags)
