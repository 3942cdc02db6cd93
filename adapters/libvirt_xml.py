"""The libvirt XML documents shelf writes (domains, pools, volumes, its network) and reads back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from domain.ports import DomainSpec

NETWORK_NAME = "shelf-net"
BRIDGE_NAME = "shelfbr0"
GATEWAY_IP = "10.213.0.1"
NETMASK = "255.255.0.0"
DHCP_FIRST = "10.213.0.2"
DHCP_LAST = "10.213.255.254"
DOMAIN_PREFIX = "shelf-"
METADATA_NS = "urn:x-shelf:instance:1"
GiB = 1024**3

ET.register_namespace("shelf", METADATA_NS)  # so libvirt keeps a readable prefix


@dataclass(frozen=True)
class DiskSource:
    """The root disk file of a domain and its format (qcow2 or raw)."""

    path: str
    format: str


@dataclass(frozen=True)
class DomainOptions:
    """How a host's domains differ: virtualisation type, machine, CPU, poweroff action."""

    virt_type: str
    machine: str | None = None
    # A named CPU model, not the host's: a guest unshelved on another host sees the same CPU.
    cpu_model: str | None = None
    # "restart" makes a test-driver domain ignore shutdown (tests of the timeout path).
    on_poweroff: str = "destroy"
    store_id: str | None = None  # the store that made the domain, in its <metadata>


def domain_name(instance_id: str) -> str:
    return f"{DOMAIN_PREFIX}{instance_id}"


def _text(element: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    child = ET.SubElement(element, tag, attrs)
    child.text = text
    return child


def _to_string(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")


def domain_xml(
    spec: DomainSpec, disk: DiskSource, options: DomainOptions, console_log: Path | None = None
) -> str:
    root = ET.Element("domain", type=options.virt_type)
    _text(root, "name", domain_name(spec.instance_id))
    _text(root, "description", spec.name)
    _metadata(root, spec, options.store_id)
    _text(root, "memory", str(spec.memory_mb), unit="MiB")
    _text(root, "vcpu", str(spec.vcpus))
    os_element = ET.SubElement(root, "os")
    os_type = _text(os_element, "type", "hvm", arch="x86_64")
    if options.machine:
        os_type.set("machine", options.machine)
    # ACPI so that shutdown() reaches a guest that listens for it.
    ET.SubElement(ET.SubElement(root, "features"), "acpi")
    if options.cpu_model:
        cpu = ET.SubElement(root, "cpu", mode="custom", match="exact")
        _text(cpu, "model", options.cpu_model, fallback="forbid")
    _text(root, "on_poweroff", options.on_poweroff)
    devices = ET.SubElement(root, "devices")
    _disk(devices, disk)
    _interface(devices, spec.mac)
    if console_log is not None:
        _serial_console(devices, console_log)
    ET.SubElement(devices, "memballoon", model="none")  # nothing here asks a guest for memory
    return _to_string(root)


def _metadata(root: ET.Element, spec: DomainSpec, store_id: str | None) -> None:
    instance = ET.SubElement(ET.SubElement(root, "metadata"), f"{{{METADATA_NS}}}instance")
    _text(instance, f"{{{METADATA_NS}}}id", spec.instance_id)
    _text(instance, f"{{{METADATA_NS}}}name", spec.name)
    if store_id:
        _text(instance, f"{{{METADATA_NS}}}store", store_id)


def domain_store_id(domain_xml_text: str) -> str | None:
    """The store id in a domain's shelf metadata (None: made before stores had ids)."""
    return ET.fromstring(domain_xml_text).findtext(
        f"metadata/{{{METADATA_NS}}}instance/{{{METADATA_NS}}}store")


def _disk(devices: ET.Element, disk: DiskSource) -> None:
    element = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(element, "driver", name="qemu", type=disk.format)
    ET.SubElement(element, "source", file=disk.path)
    ET.SubElement(element, "target", dev="vda", bus="virtio")


def _interface(devices: ET.Element, mac: str) -> None:
    element = ET.SubElement(devices, "interface", type="network")
    ET.SubElement(element, "source", network=NETWORK_NAME)
    ET.SubElement(element, "mac", address=mac)
    ET.SubElement(element, "model", type="virtio")
    ET.SubElement(element, "rom", enabled="no")  # no iPXE option ROM: boots from the disk


def _serial_console(devices: ET.Element, log: Path) -> None:
    """ttyS0 on a pty (so `virsh console` works), everything it prints appended to `log`
    by virtlogd: the file outlives power-offs, as Nova's console.log does."""
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=str(log), append="on")
    ET.SubElement(serial, "target", port="0")


def dir_pool_xml(name: str, path: Path) -> str:
    root = ET.Element("pool", type="dir")
    _text(root, "name", name)
    _text(ET.SubElement(root, "target"), "path", str(path))
    return _to_string(root)


def pool_target_path(pool_xml: str) -> Path | None:
    path = ET.fromstring(pool_xml).findtext("target/path")
    return Path(path) if path else None


def volume_xml(name: str, capacity_bytes: int, fmt: str = "qcow2") -> str:
    root = ET.Element("volume")
    _text(root, "name", name)
    _text(root, "capacity", str(capacity_bytes), unit="bytes")
    ET.SubElement(ET.SubElement(root, "target"), "format", type=fmt)
    return _to_string(root)


def network_xml() -> str:
    root = ET.Element("network")
    _text(root, "name", NETWORK_NAME)
    ET.SubElement(root, "forward", mode="nat")
    ET.SubElement(root, "bridge", name=BRIDGE_NAME)
    ip = ET.SubElement(root, "ip", address=GATEWAY_IP, netmask=NETMASK)
    ET.SubElement(ET.SubElement(ip, "dhcp"), "range", start=DHCP_FIRST, end=DHCP_LAST)
    return _to_string(root)


def dhcp_host_xml(mac: str, ip: str | None = None, name: str | None = None) -> str:
    attrs = {"mac": mac}
    if ip:
        attrs["ip"] = ip
    if name:
        attrs["name"] = name
    return _to_string(ET.Element("host", attrs))


def is_hostname(name: str) -> bool:
    """Whether dnsmasq can take the name as a host name (dot-separated DNS labels)."""
    labels = name.split(".")
    return bool(name) and len(name) <= 253 and all(_is_label(label) for label in labels)


def _is_label(label: str) -> bool:
    characters_ok = label.replace("-", "").isalnum() and label.isascii()
    return 0 < len(label) <= 63 and characters_ok and label[0] != "-" and label[-1] != "-"


@dataclass(frozen=True)
class DhcpHost:
    mac: str
    ip: str
    name: str | None


def dhcp_host_entries(network_xml_text: str) -> list[DhcpHost]:
    root = ET.fromstring(network_xml_text)
    return [
        DhcpHost(mac=host.get("mac", "").lower(), ip=host.get("ip", ""), name=host.get("name"))
        for host in root.iterfind("ip/dhcp/host")
        if host.get("mac")
    ]


def host_cpu_xml(capabilities_xml: str) -> str | None:
    """The host's `<cpu>` element from libvirt's capabilities document."""
    cpu = ET.fromstring(capabilities_xml).find("host/cpu")
    return None if cpu is None else _to_string(cpu)


def cpu_features(cpu_xml: str) -> set[str]:
    return {name for f in ET.fromstring(cpu_xml).iterfind("feature") if (name := f.get("name"))}


def domain_machine(domain_xml_text: str) -> str | None:
    """The machine type a defined domain has (libvirt expands `pc` to its versioned name)."""
    os_type = ET.fromstring(domain_xml_text).find("os/type")
    return None if os_type is None else os_type.get("machine")
