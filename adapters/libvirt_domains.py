"""A host's domains: definition, start (kvm or TCG), power and state.

Domain `shelf-<instance id>`; its metadata names the store that made it. Its root disk is
the host's storage's (`root_disk_path`) or the instance's volume file.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import libvirt

from adapters.consoles import console_log_path
from adapters.host_connection import HostConnection, Refusal, one_line, operation
from adapters.images import probe_disk_file
from adapters.libvirt_xml import (
    DOMAIN_PREFIX,
    DiskSource,
    DomainOptions,
    cpu_features,
    domain_machine,
    domain_xml,
    host_cpu_xml,
)
from adapters.logs import get_logger
from domain.ports import (
    ALREADY_OFF,
    CLEAN,
    FORCED,
    NOSTATE,
    PAUSED,
    RUNNING,
    SHUTDOWN,
    SUSPENDED,
    TIMED_OUT,
    DomainSpec,
)

log = get_logger()

POLL_INTERVAL = 0.2  # seconds between state checks while waiting for a clean shutdown
CPU_MODEL = "qemu64"  # named, so every host gives a guest the same CPU (see DomainOptions)

# Active states in which a guest can still act on an ACPI shutdown request.
_CAN_SHUT_DOWN = {
    libvirt.VIR_DOMAIN_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED,
    libvirt.VIR_DOMAIN_SHUTDOWN,
}

_LIBVIRT_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTDOWN: SHUTDOWN,
    libvirt.VIR_DOMAIN_CRASHED: SHUTDOWN,
    libvirt.VIR_DOMAIN_PMSUSPENDED: SUSPENDED,
}


class DomainsMixin(HostConnection):
    """Domains and power, for `LibvirtHost`."""

    _auto_virt_type = True
    _virt_type: str | None = None

    def root_disk_path(self, instance_id: str) -> Path:
        """The instance's local root disk (the storage's; `LibvirtHost` provides it)."""
        raise NotImplementedError

    def before_start(self, instance_id: str) -> None:
        """Called before a domain is started (the storage may need to act first)."""

    # --- state ----------------------------------------------------------------------------

    @operation("read power state of shelf-{instance_id}")
    def power_state(self, instance_id: str) -> str | None:
        domain = self._find_domain(instance_id)
        return None if domain is None else self._power_state_of(domain)

    def _power_state_of(self, domain: libvirt.virDomain) -> str:
        state = int(domain.state()[0])
        if state == libvirt.VIR_DOMAIN_SHUTOFF and domain.hasManagedSaveImage(0):
            return SUSPENDED
        return _LIBVIRT_STATES.get(state, NOSTATE)

    @operation("read domain XML of shelf-{instance_id}")
    def domain_xml(self, instance_id: str) -> str:
        """The domain's XML as libvirt holds it (for diagnosis and tests)."""
        return str(self._require_domain(instance_id).XMLDesc(0))

    @operation("list domains")
    def domains(self) -> list[str]:
        names = (str(domain.name()) for domain in self._conn.listAllDomains(0))
        return sorted(n.removeprefix(DOMAIN_PREFIX) for n in names if n.startswith(DOMAIN_PREFIX))

    # --- definition -------------------------------------------------------------------------

    @operation("define and start domain shelf-{spec.instance_id}")
    def define_and_start(self, spec: DomainSpec) -> str | None:
        domain = self._find_domain(spec.instance_id)
        if domain is None:
            domain = self._define(spec)
        if not domain.isActive():
            self._start(domain, spec)
            log.info("domain started", host=self.name, instance_id=spec.instance_id)
            domain = self._require_domain(spec.instance_id)  # _start may define it anew
        return domain_machine(domain.XMLDesc(0))

    def _define(self, spec: DomainSpec) -> libvirt.virDomain:
        console = self.console_log(spec.instance_id)
        console.parent.mkdir(parents=True, exist_ok=True)
        options = dataclasses.replace(self._domain_options(),
                                      store_id=self.mark.store_id if self.mark else None)
        if spec.machine and options.machine:  # the machine type of its first domain
            options = dataclasses.replace(options, machine=spec.machine)
        xml = domain_xml(spec, self._root_disk(spec), options, console)
        return self._conn.defineXML(xml)

    def console_log(self, instance_id: str) -> Path:
        return console_log_path(self.data_dir, self.name, instance_id)

    def _root_disk(self, spec: DomainSpec) -> DiskSource:
        if spec.volume_path is not None:
            volume = Path(spec.volume_path)
            if not volume.is_file():
                raise Refusal(f"volume file {volume} not found")
            return DiskSource(str(volume), probe_disk_file(volume).format)
        return DiskSource(str(self.root_disk_path(spec.instance_id)), "qcow2")

    def _start(self, domain: libvirt.virDomain, spec: DomainSpec) -> None:
        self.before_start(spec.instance_id)
        try:
            domain.create()
        except libvirt.libvirtError as exc:
            if not self._auto_virt_type or self._virt_type != "kvm" or (
                "kvm" not in one_line(exc).lower()
            ):
                raise
            # /dev/kvm looked usable but is not: fall back to TCG for this host.
            log.warning("kvm unusable, falling back to TCG", host=self.name, error=one_line(exc))
            self._virt_type = "qemu"
            domain.undefineFlags(self._undefine_flags())
            self._define(spec).create()

    def _domain_options(self) -> DomainOptions:
        if self._virt_type is None:
            self._virt_type = self._detect_virt_type()
        return DomainOptions(virt_type=self._virt_type, machine="pc", cpu_model=CPU_MODEL)

    def _detect_virt_type(self) -> str:
        """kvm if libvirt offers it and the host CPU has hardware virtualisation (vmx or
        svm: a software-nested /dev/kvm such as kvm_pvm offers kvm without them, and runs
        a blank disk but not a stock kernel); else qemu (TCG). The choice is logged."""
        try:
            self._conn.getDomainCapabilities(None, "x86_64", None, "kvm", 0)
        except libvirt.libvirtError as exc:
            log.info("kvm not available, using TCG", host=self.name, reason=one_line(exc))
            return "qemu"
        if not _host_cpu_virtualises(self._conn):
            log.warning("kvm offered but the host CPU has no vmx/svm; using TCG (choose "
                        "--virt-type kvm to use it anyway)", host=self.name)
            return "qemu"
        log.info("using kvm", host=self.name)
        return "kvm"

    def _undefine_flags(self) -> int:
        return int(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        )

    @operation("undefine domain shelf-{instance_id}")
    def undefine(self, instance_id: str) -> None:
        domain = self._find_domain(instance_id)
        if domain is None:
            return
        if domain.isActive():
            _destroy(domain)
        domain.undefineFlags(self._undefine_flags())
        self.console_log(instance_id).unlink(missing_ok=True)  # goes with the domain
        log.info("domain undefined", host=self.name, instance_id=instance_id)

    # --- power ----------------------------------------------------------------------------

    @operation("power on shelf-{instance_id}")
    def power_on(self, instance_id: str) -> None:
        domain = self._require_domain(instance_id)
        if not domain.isActive():
            self.before_start(instance_id)
            domain.create()  # restores a managed save image if there is one

    @operation("power off shelf-{instance_id}")
    def power_off(self, instance_id: str, clean_timeout: float, retry_interval: float) -> str:
        domain = self._find_domain(instance_id)
        if domain is None:
            return ALREADY_OFF
        if not domain.isActive():
            if domain.hasManagedSaveImage(0):
                domain.managedSaveRemove(0)  # a suspended domain becomes plainly shut off
            return ALREADY_OFF
        if clean_timeout <= 0 or int(domain.state()[0]) not in _CAN_SHUT_DOWN:
            _destroy(domain)  # a paused, pm-suspended or crashed guest can't act on ACPI
            return FORCED
        return self._shut_down(domain, clean_timeout, retry_interval)

    def _shut_down(
        self, domain: libvirt.virDomain, clean_timeout: float, retry_interval: float
    ) -> str:
        """ACPI shutdown, re-asked every retry_interval; destroy when clean_timeout ends."""
        deadline = time.monotonic() + clean_timeout
        next_ask = time.monotonic()
        while domain.isActive():
            now = time.monotonic()
            if now >= deadline:
                log.warning("clean shutdown timed out; destroying", host=self.name,
                            domain=str(domain.name()), timeout=clean_timeout)
                _destroy(domain)
                return TIMED_OUT
            if now >= next_ask:
                self._ask_shutdown(domain)
                next_ask = now + max(retry_interval, POLL_INTERVAL)
                continue  # some drivers shut down synchronously: look again at once
            time.sleep(min(POLL_INTERVAL, deadline - now))
        log.info("domain shut down cleanly", host=self.name, domain=str(domain.name()))
        return CLEAN

    def _ask_shutdown(self, domain: libvirt.virDomain) -> None:
        try:
            domain.shutdown()
        except libvirt.libvirtError as exc:
            # Drivers word "already off" differently; a refusal only means we wait, then destroy.
            log.info("shutdown request refused", host=self.name, error=one_line(exc))

    @operation("pause shelf-{instance_id}")
    def pause(self, instance_id: str) -> None:
        domain = self._require_domain(instance_id)
        state = self._power_state_of(domain)
        if state != PAUSED:
            _require_state(state, RUNNING)
            domain.suspend()

    @operation("unpause shelf-{instance_id}")
    def unpause(self, instance_id: str) -> None:
        domain = self._require_domain(instance_id)
        state = self._power_state_of(domain)
        if state != RUNNING:
            _require_state(state, PAUSED)
            domain.resume()

    @operation("suspend shelf-{instance_id}")
    def suspend(self, instance_id: str) -> None:
        domain = self._require_domain(instance_id)
        state = self._power_state_of(domain)
        if state != SUSPENDED:
            _require_state(state, RUNNING, PAUSED)
            domain.managedSave(0)

    @operation("resume shelf-{instance_id}")
    def resume(self, instance_id: str) -> None:
        """Restore the managed save image; always ends running (a save of a paused guest
        restores paused, so it is unpaused too)."""
        domain = self._require_domain(instance_id)
        if not domain.isActive():
            if not domain.hasManagedSaveImage(0):
                raise Refusal("the domain is shutdown, not suspended")
            self.before_start(instance_id)
            domain.create()
        state = int(domain.state()[0])
        if state == libvirt.VIR_DOMAIN_PAUSED:
            domain.resume()
        elif state == libvirt.VIR_DOMAIN_PMSUSPENDED:
            domain.pMWakeup(0)


def _destroy(domain: libvirt.virDomain) -> None:
    try:
        domain.destroy()
    except libvirt.libvirtError:
        if domain.isActive():
            raise  # else it went off on its own meanwhile: that is what we wanted


def _host_cpu_virtualises(conn: libvirt.virConnect) -> bool:
    """Whether the host CPU, with its model's features expanded, has vmx or svm."""
    host_cpu = host_cpu_xml(conn.getCapabilities())
    if host_cpu is None:
        return False
    expanded = conn.baselineCPU([host_cpu], libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
    return bool(cpu_features(expanded) & {"vmx", "svm"})


def _require_state(state: str, *allowed: str) -> None:
    if state not in allowed:
        raise Refusal(f"the domain is {state}, not {' or '.join(allowed)}")
