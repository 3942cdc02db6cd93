"""The libvirt host driver against libvirt's test driver (always) and qemu:///system (e2e)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from adapters.images import DirectoryImageStore
from adapters.libvirt_host import (
    LibvirtHost,
    LibvirtHosts,
    TestDriverHost,
    UnknownHost,
    open_host,
)
from domain.ports import (
    ALREADY_OFF,
    CLEAN,
    FORCED,
    PAUSED,
    RUNNING,
    SHUTDOWN,
    SUSPENDED,
    TIMED_OUT,
    Capacity,
    DomainSpec,
    HypervisorError,
    ImageNotFound,
)

GiB = 1024**3
MINIMAL_NODE = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads></cpu>
  <memory>8388608</memory>
</node>
"""


def spec_for(instance_id: str = "i1", **changes: object) -> DomainSpec:
    fields: dict[str, object] = {
        "instance_id": instance_id,
        "name": f"vm-{instance_id}",
        "vcpus": 1,
        "memory_mb": 64,
        "disk_gb": 10,
        "mac": "52:54:00:00:00:01",
        "ip": "10.213.0.5",
    }
    fields.update(changes)
    return DomainSpec(**fields)  # type: ignore[arg-type]


def write_qcow2_header(path: Path, virtual_size: int) -> None:
    header = b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", virtual_size)
    path.write_bytes(header + bytes(4096))


def twice(call: Callable[[], object]) -> None:
    """Every host method is idempotent: the second call must be a harmless no-op."""
    call()
    call()


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    node = tmp_path / "node.xml"
    node.write_text(MINIMAL_NODE)
    return f"test://{node}"


@pytest.fixture
def host(node_uri: str, tmp_path: Path) -> Iterator[LibvirtHost]:
    driver = open_host("h1", node_uri, tmp_path / "data")
    yield driver
    driver.close()


@pytest.fixture
def stubborn_host(node_uri: str, tmp_path: Path) -> Iterator[TestDriverHost]:
    """Its guests ignore ACPI shutdown, like a hung guest OS."""
    driver = TestDriverHost("h1", node_uri, tmp_path / "data", guests_ignore_shutdown=True)
    yield driver
    driver.close()


# --- test driver ------------------------------------------------------------------------


def test_open_host_picks_the_test_driver_for_test_uris(host: LibvirtHost) -> None:
    assert isinstance(host, TestDriverHost)
    assert (host.name, host.uri.startswith("test:///")) == ("h1", True)


def test_capacity_of_a_node_with_only_cpu_and_memory(host: LibvirtHost, tmp_path: Path) -> None:
    assert host.capacity() == Capacity(vcpus=4, memory_mb=8192, disk_gb=100)
    assert (tmp_path / "data" / "hosts" / "h1" / "disks").is_dir()


def test_full_cycle_each_step_idempotent(host: LibvirtHost, tmp_path: Path) -> None:
    spec = spec_for()
    twice(lambda: host.create_disk(spec, None))
    assert host.has_disk("i1") and host.disks() == ["i1"]
    twice(lambda: host.add_dhcp_host(spec.mac, spec.ip, spec.name))
    twice(lambda: host.define_and_start(spec))
    assert host.power_state("i1") == RUNNING and host.domains() == ["i1"]
    for step, state in [
        (host.pause, PAUSED),
        (host.unpause, RUNNING),
        (host.suspend, SUSPENDED),
        (host.resume, RUNNING),
    ]:
        twice(lambda step=step: step("i1"))  # type: ignore[misc]
        assert host.power_state("i1") == state, step.__name__
    assert host.power_off("i1", 5.0, 1.0) == CLEAN
    assert host.power_off("i1", 5.0, 1.0) == ALREADY_OFF
    assert host.power_state("i1") == SHUTDOWN
    export = tmp_path / "exports" / "snap.img"
    assert host.export_disk("i1", export) == 10 * GiB
    assert host.export_disk("i1", export) == 10 * GiB  # a leftover is simply rewritten
    assert export.stat().st_size == 10 * GiB
    twice(lambda: host.undefine("i1"))
    twice(lambda: host.delete_disk("i1"))
    twice(lambda: host.remove_dhcp_host(spec.mac))
    assert host.power_state("i1") is None
    assert (host.domains(), host.disks(), host.dhcp_hosts()) == ([], [], {})


def test_power_on_after_power_off(host: LibvirtHost) -> None:
    spec = spec_for()
    host.create_disk(spec, None)
    host.define_and_start(spec)
    host.power_off("i1", 0, 0)
    twice(lambda: host.power_on("i1"))
    assert host.power_state("i1") == RUNNING


def test_define_and_start_starts_a_defined_but_stopped_domain(host: LibvirtHost) -> None:
    spec = spec_for()
    host.create_disk(spec, None)
    host.define_and_start(spec)
    host.power_off("i1", 0, 0)
    host.define_and_start(spec)
    assert host.power_state("i1") == RUNNING


def test_clean_shutdown_timeout_destroys_the_domain(stubborn_host: TestDriverHost) -> None:
    spec = spec_for()
    stubborn_host.create_disk(spec, None)
    stubborn_host.define_and_start(spec)
    started = time.monotonic()
    assert stubborn_host.power_off("i1", clean_timeout=0.6, retry_interval=0.2) == TIMED_OUT
    assert time.monotonic() - started >= 0.6
    assert stubborn_host.power_state("i1") == SHUTDOWN


@pytest.mark.parametrize("pause_first", [False, True])
def test_zero_timeout_or_a_paused_domain_is_destroyed_at_once(
    stubborn_host: TestDriverHost, pause_first: bool
) -> None:
    spec = spec_for()
    stubborn_host.create_disk(spec, None)
    stubborn_host.define_and_start(spec)
    if pause_first:
        stubborn_host.pause("i1")
    started = time.monotonic()
    ended = stubborn_host.power_off("i1", clean_timeout=0 if not pause_first else 30,
                                    retry_interval=10)
    assert ended == FORCED
    assert time.monotonic() - started < 1.0
    assert stubborn_host.power_state("i1") == SHUTDOWN


def test_power_off_of_a_suspended_domain_drops_its_saved_state(host: LibvirtHost) -> None:
    spec = spec_for()
    host.create_disk(spec, None)
    host.define_and_start(spec)
    host.suspend("i1")
    host.power_off("i1", 5, 1)
    assert host.power_state("i1") == SHUTDOWN


def test_disk_from_an_image_takes_the_larger_of_disk_and_image_size(
    host: LibvirtHost, tmp_path: Path
) -> None:
    big_image, small_image = tmp_path / "big.qcow2", tmp_path / "small.raw"
    write_qcow2_header(big_image, 20 * GiB)
    small_image.write_bytes(bytes(1024 * 1024))
    host.create_disk(spec_for("big", disk_gb=10), big_image)
    host.create_disk(spec_for("small", disk_gb=2), small_image)
    assert host.export_disk("big", tmp_path / "big.img") == 20 * GiB
    assert host.export_disk("small", tmp_path / "small.img") == 2 * GiB


def test_a_missing_image_is_image_not_found_unless_the_disk_exists(
    host: LibvirtHost, tmp_path: Path
) -> None:
    image = tmp_path / "gone.qcow2"
    with pytest.raises(ImageNotFound, match=r"^host h1: create disk for shelf-i1: image file"):
        host.create_disk(spec_for(), image)
    host.create_disk(spec_for(), None)
    host.create_disk(spec_for(), image)  # done already: the image is not needed any more


def test_export_of_a_running_domain_is_refused(host: LibvirtHost, tmp_path: Path) -> None:
    spec = spec_for()
    host.create_disk(spec, None)
    host.define_and_start(spec)
    with pytest.raises(HypervisorError, match=r"^host h1: export disk of shelf-i1 to .*running"):
        host.export_disk("i1", tmp_path / "x.img")


def test_define_without_a_disk_is_refused(host: LibvirtHost) -> None:
    with pytest.raises(HypervisorError, match=r"^host h1: define and start domain shelf-i1: "):
        host.define_and_start(spec_for())
    assert host.domains() == []


def test_pause_of_a_stopped_domain_names_the_state(host: LibvirtHost) -> None:
    spec = spec_for()
    host.create_disk(spec, None)
    host.define_and_start(spec)
    host.power_off("i1", 0, 0)
    with pytest.raises(HypervisorError, match="the domain is shutdown, not running"):
        host.pause("i1")


def test_volume_backed_domain_uses_the_volume_path(host: LibvirtHost, tmp_path: Path) -> None:
    volume = tmp_path / "volumes" / "i1.qcow2"
    twice(lambda: host.create_volume(volume, 2, None))
    assert volume.stat().st_size == 2 * GiB
    host.define_and_start(spec_for(volume_path=str(volume)))
    assert host.power_state("i1") == RUNNING
    assert f"<source file='{volume}'/>" in host.domain_xml("i1")
    assert host.disks() == []


def test_domain_xml_carries_name_mac_and_sizes(host: LibvirtHost) -> None:
    spec = spec_for(vcpus=2, memory_mb=128)
    host.create_disk(spec, None)
    host.define_and_start(spec)
    xml = host.domain_xml("i1")
    for part in ["<name>shelf-i1</name>", "vm-i1", "<mac address='52:54:00:00:00:01'/>",
                 "<source network='shelf-net'/>", ">2</vcpu>", "<memory unit='KiB'>131072"]:
        assert part in xml


def test_dhcp_entry_with_a_stale_ip_is_replaced(host: LibvirtHost) -> None:
    host.add_dhcp_host("52:54:00:00:00:01", "10.213.0.5", "vm1")
    host.add_dhcp_host("52:54:00:00:00:01", "10.213.0.6", "vm1")
    assert host.dhcp_hosts() == {"52:54:00:00:00:01": "10.213.0.6"}


def test_dhcp_entries_may_share_an_instance_name(host: LibvirtHost) -> None:
    host.add_dhcp_host("52:54:00:00:00:01", "10.213.0.5", "vm1")
    host.add_dhcp_host("52:54:00:00:00:02", "10.213.0.6", "vm1")
    host.add_dhcp_host("52:54:00:00:00:03", "10.213.0.7", "not a hostname")
    assert len(host.dhcp_hosts()) == 3


def test_closed_host_refuses_work(host: LibvirtHost) -> None:
    host.close()
    host.close()
    with pytest.raises(HypervisorError, match="closed"):
        host.domains()


def test_libvirt_hosts_caches_one_connection_per_host(node_uri: str, tmp_path: Path) -> None:
    uris = {"h1": node_uri}
    hosts = LibvirtHosts(lambda name: uris[name], tmp_path / "data")
    first = hosts.driver("h1")
    first.create_disk(spec_for(), None)
    assert hosts.driver("h1") is first
    assert hosts.driver("h1").has_disk("i1")  # the test driver's state lives in that connection
    uris["h2"] = node_uri  # a host added after construction
    second = hosts.driver("h2")
    assert second is not first and second.disks() == []
    with pytest.raises(UnknownHost) as unknown:
        hosts.driver("nowhere")
    assert isinstance(unknown.value, KeyError) and isinstance(unknown.value, HypervisorError)
    assert str(unknown.value) == "unknown host nowhere"
    hosts.close()
    with pytest.raises(HypervisorError):
        first.disks()


# --- real libvirtd (e2e) ----------------------------------------------------------------

SYSTEM_URI = "qemu:///system"
PATTERN_CHECK = 'read -P 0xab 0 1M'


@dataclass
class RealEnv:
    host: LibvirtHost
    images: DirectoryImageStore
    base: Path
    macs: list[str] = field(default_factory=list)

    def new_spec(self, **changes: object) -> DomainSpec:
        instance_id = f"e2e-{uuid.uuid4().hex[:12]}"
        octets = uuid.uuid4().bytes
        mac = "52:54:00:" + ":".join(f"{octet:02x}" for octet in octets[:3])
        self.macs.append(mac)
        ip = f"10.213.{200 + octets[3] % 50}.{2 + octets[4] % 250}"
        defaults: dict[str, object] = {"disk_gb": 1, "mac": mac, "ip": ip}
        return spec_for(instance_id, **(defaults | changes))

    def patterned_image(self) -> Path:
        """A 64 MiB qcow2 image whose first MiB is 0xab, imported into the store."""
        source = self.base / "source.qcow2"
        _run("qemu-img", "create", "-f", "qcow2", str(source), "64M")
        _run("qemu-io", "-c", "write -P 0xab 0 1M", str(source))
        return self.images.path_for(self.images.import_file("patterned", source).id)


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return done.stdout


def assert_pattern(path: Path) -> None:
    done = subprocess.run(
        ["qemu-io", "-r", "-U", "-c", PATTERN_CHECK, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Pattern verification failed" not in done.stdout


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":  # CI never skips the libvirtd tests
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def real_env() -> Iterator[RealEnv]:
    try:
        probe = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as exc:
        _unavailable(f"no {SYSTEM_URI}: {exc}")
    if not (shutil.which("qemu-img") and shutil.which("qemu-io")):
        _unavailable("qemu-img and qemu-io are needed")
    # Under /var/tmp so that libvirtd (root, its own private /tmp) can reach the files.
    base = Path(tempfile.mkdtemp(prefix="shelf-e2e-", dir="/var/tmp"))
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    host = open_host(name, SYSTEM_URI, base / "data")
    env = RealEnv(host, DirectoryImageStore(base / "images"), base)
    try:
        yield env
    finally:
        env.host.close()
        _clean_up(probe, env)
        probe.close()
        shutil.rmtree(base, ignore_errors=True)


def _clean_up(conn: libvirt.virConnect, env: RealEnv) -> None:
    """Remove what the test made on the shared libvirtd; shelf-net itself stays defined."""
    for domain in conn.listAllDomains(0):
        if str(env.base) in domain.XMLDesc(0):
            with contextlib.suppress(libvirt.libvirtError):
                domain.destroy()
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    for pool in conn.listAllStoragePools(0):
        if str(env.base) in pool.XMLDesc(0):
            persistent = pool.isPersistent()
            if pool.isActive():
                pool.destroy()  # a transient pool vanishes here
            if persistent:
                pool.undefine()
    with contextlib.suppress(libvirt.libvirtError):
        network = conn.networkLookupByName("shelf-net")
        for mac in env.macs:
            xml = f"<host mac='{mac}'/>"
            with contextlib.suppress(libvirt.libvirtError):
                network.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
                               libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml,
                               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
                               | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)


@pytest.mark.e2e
def test_real_shelve_cycle_keeps_the_disk_contents(real_env: RealEnv) -> None:
    host, images = real_env.host, real_env.images
    spec = real_env.new_spec(memory_mb=64, disk_gb=1)
    image = real_env.patterned_image()
    twice(lambda: host.create_disk(spec, image))
    host.add_dhcp_host(spec.mac, spec.ip, spec.name)
    assert host.dhcp_hosts()[spec.mac] == spec.ip
    machine = host.define_and_start(spec)
    assert machine is not None and machine.startswith("pc-")  # libvirt's versioned name
    assert host.define_and_start(spec) == machine
    assert host.power_state(spec.instance_id) == RUNNING
    xml = host.domain_xml(spec.instance_id)
    assert re.match(r"<domain type='(kvm|qemu)'", xml)
    assert "<memballoon model='none'/>" in xml and "<rom enabled='no'/>" in xml
    console = host.console_log(spec.instance_id)
    assert console.is_file()  # made at start, though a blank disk prints nothing
    started = time.monotonic()
    ended = host.power_off(spec.instance_id, clean_timeout=2, retry_interval=1)
    assert ended == TIMED_OUT  # no guest OS: ACPI is ignored, then destroy
    assert time.monotonic() - started >= 2
    assert console.is_file()  # the log outlives a power-off
    assert host.power_state(spec.instance_id) == SHUTDOWN
    snapshot_id = str(uuid.uuid4())
    size = host.export_disk(spec.instance_id, images.path_for(snapshot_id))
    assert size > 0
    assert_pattern(images.path_for(snapshot_id))
    info = images.commit(snapshot_id, f"{spec.name}-shelved", spec.instance_id)
    assert (info.format, info.virtual_size) == ("qcow2", GiB)
    twice(lambda: host.undefine(spec.instance_id))
    assert not console.exists()  # and goes with the domain
    disk_file = real_env.base / "data" / "hosts" / host.name / "disks" / f"{spec.instance_id}.qcow2"
    assert disk_file.is_file()
    twice(lambda: host.delete_disk(spec.instance_id))
    assert not disk_file.exists()
    host.remove_dhcp_host(spec.mac)
    assert spec.mac not in host.dhcp_hosts()
    assert spec.instance_id not in host.domains() and host.disks() == []


@pytest.mark.e2e
def test_real_volume_backed_domain_suspends_and_resumes(real_env: RealEnv) -> None:
    host = real_env.host
    volume = real_env.base / "volumes" / "root.qcow2"
    twice(lambda: host.create_volume(volume, 1, real_env.patterned_image()))
    assert_pattern(volume)
    assert "virtual size: 1 GiB" in _run("qemu-img", "info", "-U", str(volume))
    spec = real_env.new_spec(volume_path=str(volume))
    host.define_and_start(spec)
    assert f"<source file='{volume}'" in host.domain_xml(spec.instance_id)
    twice(lambda: host.suspend(spec.instance_id))
    assert host.power_state(spec.instance_id) == SUSPENDED
    twice(lambda: host.resume(spec.instance_id))
    assert host.power_state(spec.instance_id) == RUNNING
    host.power_off(spec.instance_id, clean_timeout=0, retry_interval=0)
    assert host.power_state(spec.instance_id) == SHUTDOWN
    host.undefine(spec.instance_id)
    assert volume.is_file()  # a volume outlives its domain


@pytest.mark.e2e
def test_real_host_reconnects_after_a_broken_connection(real_env: RealEnv) -> None:
    host = real_env.host
    host.capacity()
    host._conn.close()  # simulate libvirtd dropping us (a restart, a network cut)
    assert host.capacity().disk_gb > 0
