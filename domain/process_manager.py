"""The process manager: for an instance with a plan in flight, perform the next step.

A step is: read the aggregate, ask the hypervisor for its real state, act only if still
needed (every HostDriver method is idempotent), record the result as the next event.
A crash between the act and the record is repaired by doing the step again. Optimistic
concurrency on the aggregate means two workers can never both record one step.

Quick steps are recorded together. Before each step, a drive commits the events it holds
unless that step has been quick on its host so far (a step that only records always is);
and always before a step that needs them durable (a deletion), or if they have waited
RECORD_WITHIN_SECONDS by then. Else they go in one transaction with the next steps'
events, at the latest when the drive stops. A crash then repeats those few quick steps,
as it repeats one: each is idempotent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from domain import plans
from domain import states as s
from domain.errors import NoRoom, Unreadable
from domain.host import CATALOG_ID, Host, HostCatalog, host_id_for
from domain.instance import Instance
from domain.ports import (
    ALREADY_OFF,
    DomainSpec,
    HostDrivers,
    HostUnreachable,
    HypervisorError,
    ImageNotFound,
    ImageStore,
)
from domain.registry import AddressBlock, NameIndex, address_block_id, block_of, name_index_id
from domain.service import RecordConflict, Repository, find

MAX_STEPS_PER_DRIVE = 64
# Recording quick steps together (see above). A hypervisor step is quick on a host if it
# has taken under QUICK_STEP_SECONDS there (libvirt's test driver; a network update): a
# real power-off or snapshot takes seconds, so what came before is recorded when it
# starts, and `show` follows it step by step. A step never timed on a host counts as
# slow. The time taken is a moving average that rises at once and falls slowly, so one
# slow run of a step marks it slow for the next several. Steps that only record (claim,
# release, finish) are quick: their time is the database's, not a host's.
QUICK_STEP_SECONDS = 0.01
RECORD_WITHIN_SECONDS = 0.05
STEP_TIME_WEIGHT = 0.2  # of a quicker run in the moving average
# Steps whose effect a repeat of an earlier step could not survive: deleting the image (or
# volume) leaves a repeated spawn nothing to spawn from. A claim (first in its plans, so
# nothing is held before it in practice) retries on the assumption that the instance
# holds its own event only. What comes before is committed first.
RECORDED_BEFORE = frozenset({plans.CLAIM, plans.DELETE_IMAGE, plans.DELETE_VOLUME})
HOST_VIEW_SECONDS = 5.0  # how stale a host may look when ranking (a claim always reloads it)
CLAIM_ATTEMPTS = 10
# How many instances' last recorded versions `recorded_here` keeps. Forgetting one costs
# at most a drive that finds nothing to do.
RECORDED_KEPT = 10_000
SERVICE_USER = "shelf"
# The steps of a delete that a host which can't be reached is left out of (Nova's local
# delete): what the instance has there is left for `reconcile`.
LEFT_ON_HOST_STEPS = frozenset({plans.POWER_OFF, plans.CLEAN_NETWORK, plans.DESTROY})


@dataclass(frozen=True)
class Settings:
    shelved_offload_time: float = 0  # -1 never, 0 at once, N seconds after shelving
    shutdown_timeout: float = 60
    shutdown_retry_interval: float = 10
    # The hosts whose hypervisor steps this worker performs (`serve --host`); None: all.
    # Steps that call no hypervisor (claim, finish, ...) are anyone's.
    hosts: frozenset[str] | None = None


class VolumeStore(Protocol):
    def path_for(self, instance_id: str) -> Path: ...

    def exists(self, instance_id: str) -> bool: ...

    def delete(self, instance_id: str) -> None: ...


class Failpoints(Protocol):
    def hit(self, name: str) -> None:
        """Crash or raise if a failpoint of that name is set; otherwise nothing."""


class NoFailpoints:
    def hit(self, name: str) -> None:
        return None


_ON_HOST_STEPS = frozenset({plans.POWER_OFF, plans.POWER_ON, plans.PAUSE, plans.UNPAUSE,
                            plans.SUSPEND, plans.RESUME, plans.SNAPSHOT})


def acting_host(instance: Instance, step: str) -> str | None:
    """The host whose hypervisor `step` calls (as the step method picks it), or None for a
    step that only records, or touches the shared image and volume stores."""
    if step in _ON_HOST_STEPS:
        return instance.host
    if step == plans.CLEAN_NETWORK:
        return instance.network_host or instance.claim_host
    if step == plans.DESTROY:
        return instance.host or instance.claim_host
    if step in (plans.SETUP_NETWORK, plans.SPAWN):
        return instance.claim_host
    return None


class ProcessManager:
    def __init__(
        self, repo: Repository, hosts: HostDrivers, images: ImageStore, volumes: VolumeStore,
        settings: Settings | None = None, failpoints: Failpoints | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        served: Callable[[str], bool] | None = None,
    ) -> None:
        self.repo, self.hosts, self.images, self.volumes = repo, hosts, images, volumes
        # Whether some serve performs the steps on a host (`serve --host`): placement
        # skips one that nobody serves, as Nova's scheduler skips a host whose compute
        # service is down. None: this serve performs every host's steps itself.
        self.served = served
        self.settings = settings or Settings()
        self.failpoints = failpoints or NoFailpoints()
        self.clock = clock
        self._latest: dict[uuid.UUID, Instance] = {}  # per instance, see drive()
        # Instances whose object holds events not yet recorded: since when (monotonic).
        self._unrecorded: dict[uuid.UUID, float] = {}
        # (host, step) -> seconds, a moving average: see QUICK_STEP_SECONDS.
        self._step_seconds: dict[tuple[str, str], float] = {}
        self._recorded: dict[uuid.UUID, int] = {}  # the version this process last saved
        # name -> (when seen, host): for ranking only, see _choose_host()
        self._host_cache: dict[str, tuple[float, Host]] = {}
        self.log = structlog.get_logger("shelf.process_manager")
        self.steps: dict[str, Callable[[Instance], None]] = {
            plans.POWER_OFF: self.power_off, plans.POWER_ON: self.power_on,
            plans.PAUSE: self.pause, plans.UNPAUSE: self.unpause,
            plans.SUSPEND: self.suspend, plans.RESUME: self.resume,
            plans.SNAPSHOT: self.snapshot, plans.CLEAN_NETWORK: self.clean_network,
            plans.DESTROY: self.destroy, plans.RELEASE_CLAIM: self.release_claim,
            plans.CLAIM: self.claim, plans.SETUP_NETWORK: self.setup_network,
            plans.SPAWN: self.spawn, plans.DELETE_IMAGE: self.delete_image,
            plans.DELETE_VOLUME: self.delete_volume, plans.FINISH: self.finish,
        }

    # ---- driving ----------------------------------------------------------------------

    def drive(self, instance_id: uuid.UUID) -> None:
        """Perform steps until the instance is idle (or another worker holds it), and
        record whatever they left unrecorded."""
        try:
            instance = self._perform_steps(instance_id)
        except BaseException:  # what it held unrecorded is lost: done again next drive
            self._unrecorded.pop(instance_id, None)
            self._latest.pop(instance_id, None)
            raise
        if instance is not None:
            self.record_unrecorded(instance)

    def _perform_steps(self, instance_id: uuid.UUID) -> Instance | None:
        """The steps of one drive; returns the object it went on with, which may hold
        the events of its last quick steps, not yet recorded."""
        instance: Instance | None = None
        for _ in range(MAX_STEPS_PER_DRIVE):
            if instance is None:
                instance = find(self.repo, instance_id, Instance)
                if instance is None:
                    return None
            step = instance.next_step()
            if step is None:
                if not self.offload_if_due(instance):
                    return instance
                instance = self._latest.pop(instance_id, None)
                continue
            if not self.performs_here(instance, step):
                return instance  # the serve that owns that host takes it from here (cli/worker.py)
            if self._records_before(instance, step) and not self.record_unrecorded(instance):
                instance = None  # another writer moved it on: reload, repeat what was lost
                continue
            self._latest.pop(instance_id, None)  # only what this step leaves counts
            try:
                self.perform(instance, step)
            except RecordConflict:
                self.log.info("step.lost_race", instance_id=str(instance_id), step=step)
            # Go on with the object this step left, if it left one (a failed step saves a
            # reloaded copy, a claim that lost a race a fresh one): it is the latest state.
            instance = self._latest.pop(instance_id, None)
        return instance

    def _records_before(self, instance: Instance, step: str) -> bool:
        """Whether the events the drive holds unrecorded are committed before `step`."""
        since = self._unrecorded.get(instance.id)
        if since is None:
            return False
        if step in RECORDED_BEFORE or time.monotonic() - since >= RECORD_WITHIN_SECONDS:
            return True
        host = acting_host(instance, step)
        if host is None:
            return False  # only records: as quick as the commit it would wait for
        seconds = self._step_seconds.get((host, step))
        return seconds is None or seconds >= QUICK_STEP_SECONDS

    def record_unrecorded(self, instance: Instance) -> bool:
        """Commit the events `instance` holds; False if another writer moved it on first
        (the events are lost, and their steps are done again from the stored state). The
        caller goes on with `instance` itself, or reloads."""
        if instance.id not in self._unrecorded:
            return True
        try:
            self._save(instance)
        except RecordConflict:
            self.log.info("step.lost_race", instance_id=str(instance.id), step="record")
            return False
        finally:
            self._latest.pop(instance.id, None)
        return True

    def recorded_here(self, instance_id: uuid.UUID, version: int) -> bool:
        """Whether this process recorded that version of the instance itself: its drive
        went on from there already, so the event needs no drive of its own. Forgotten
        once the last version it recorded has been asked about."""
        last = self._recorded.get(instance_id)
        if last is None:
            return False
        if version >= last:
            self._recorded.pop(instance_id, None)
        return version <= last

    def performs_here(self, instance: Instance, step: str) -> bool:
        owned = self.settings.hosts
        return owned is None or acting_host(instance, step) in (None, *owned)

    def perform(self, instance: Instance, step: str) -> None:
        log = self.log.bind(
            instance_id=str(instance.id), request_id=instance.request_id, step=step,
            plan=instance.plan,
        )
        log.debug("step.start")
        if step == plans.FINISH:
            self.finish(instance)
            log.info("action.finished", vm_state=instance.vm_state)
            return
        host, started = acting_host(instance, step), time.monotonic()
        try:
            self.failpoints.hit(f"before:{step}")
            self.steps[step](instance)
        except (HypervisorError, NoRoom) as error:
            log.warning("step.failed", error=str(error))
            self.record_unrecorded(instance)  # the steps before it did succeed
            if not self.delete_without_host(instance, step, host, error):
                self.record_failure(instance, step, error)
            return
        if host is not None:
            self.note_step_seconds(host, step, time.monotonic() - started)
        log.info("step.done")

    def note_step_seconds(self, host: str, step: str, seconds: float) -> None:
        """How long `step` took on `host`: whether the events before it wait for it next
        time (see QUICK_STEP_SECONDS)."""
        average = self._step_seconds.get((host, step), seconds)
        if seconds < average:
            seconds = average + STEP_TIME_WEIGHT * (seconds - average)
        self._step_seconds[(host, step)] = seconds

    def record_failure(self, failed: Instance, step: str, error: Exception) -> None:
        # Reload: the failed attempt may have mutated the object without saving it.
        instance = find(self.repo, failed.id, Instance)
        if instance is None or instance.next_step() != step:
            return  # another worker or request moved it on meanwhile
        rollback, vm_state = plans.rollback_for(
            instance.plan or "abort", step, instance.vm_state, isinstance(error, ImageNotFound)
        )
        instance.record_step_failed(
            user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
            step=step, error=str(error), host=instance.host or instance.claim_host,
            rollback_plan=rollback, final_vm_state=vm_state,
        )
        self._save(instance)

    def delete_without_host(
        self, failed: Instance, step: str, host: str | None, error: Exception
    ) -> bool:
        """Nova's local delete: a delete whose host can't be reached (within the connect
        and keepalive bounds) goes on without it. False when this isn't such a case."""
        if not (isinstance(error, HostUnreachable) and failed.plan == "delete"
                and step in LEFT_ON_HOST_STEPS and host is not None):
            return False
        instance = find(self.repo, failed.id, Instance)
        if instance is None or instance.next_step() != step:
            return True  # another worker or request moved it on meanwhile
        instance.record_left_on_host(
            user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
            host=host, step=step,
            reason=f"{error}; deleted without it: what is left there is for `shelf reconcile`",
        )
        self._save(instance)
        self.log.warning("step.left_on_host", instance_id=str(instance.id), step=step,
                         host=host)
        return True

    def offload_if_due(self, instance: Instance) -> bool:
        """shelved_offload_time: offload a shelved instance once its time has come."""
        wait = self.settings.shelved_offload_time
        if instance.vm_state != s.SHELVED or not instance.is_idle or wait < 0:
            return False
        if instance.fault is not None and instance.action in ("shelve", "shelveOffload"):
            # An offload that failed is not tried again by itself (it would fail again,
            # at once, for ever): the fault stays shown until someone asks again.
            return False
        shelved_at = instance.shelved_at
        if shelved_at is None or (self.clock() - shelved_at).total_seconds() < wait:
            return False
        if wait == 0:  # part of the shelve itself, as in Nova: same request, same action
            user, request_id, action = instance.user, instance.request_id, "shelve"
        else:
            user, request_id, action = SERVICE_USER, f"req-{uuid.uuid4()}", "shelveOffload"
        instance.request_shelve_offload(user or SERVICE_USER, request_id or "", action)
        self._save(instance)
        return True

    # ---- recording helpers ------------------------------------------------------------

    def _record(self, instance: Instance, method: Callable[..., None], **fields: Any) -> None:
        """The `after:` failpoint fires between the side effect and its record."""
        self.failpoints.hit(f"after:{plans.next_step(instance)}")
        method(user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
               **fields)
        self._keep_unrecorded(instance)

    def _keep_unrecorded(self, instance: Instance) -> None:
        """The drive goes on with `instance`; its new events are recorded with a later
        step's, or when the drive stops (see drive())."""
        self._latest[instance.id] = instance
        self._unrecorded.setdefault(instance.id, time.monotonic())

    def _save(self, *aggregates: Any) -> None:
        """Save in one transaction; remember the objects that are now the stored state."""
        try:
            self.repo.save(*aggregates)
        finally:  # saved or not, the objects hold no unrecorded events any more
            for aggregate in aggregates:
                self._unrecorded.pop(aggregate.id, None)
        for aggregate in aggregates:
            if isinstance(aggregate, Instance):
                self._latest[aggregate.id] = aggregate
                if len(self._recorded) >= RECORDED_KEPT:  # left by drives whose last
                    self._recorded.clear()  # event was never asked about: forget them all
                self._recorded[aggregate.id] = aggregate.version
            elif isinstance(aggregate, Host):  # keeps this worker's ranking view current
                self._host_cache[aggregate.name] = (time.monotonic(), aggregate)

    def _spec(self, instance: Instance) -> DomainSpec:
        return DomainSpec(
            instance_id=str(instance.id), name=instance.name, vcpus=instance.vcpus,
            memory_mb=instance.memory_mb, disk_gb=instance.disk_gb, mac=instance.mac,
            ip=instance.ip, machine=getattr(instance, "machine", None),
            volume_path=(
                str(self.volumes.path_for(str(instance.id))) if instance.volume_backed else None
            ),
        )

    # ---- power steps ------------------------------------------------------------------

    def power_off(self, instance: Instance) -> None:
        host, shutdown = instance.host, ALREADY_OFF
        if host is not None:
            forced = (
                instance.plan in plans.FORCED_POWER_OFF_PLANS
                or instance.power_state == s.POWER_PAUSED
            )
            timeout = 0.0 if forced else self.settings.shutdown_timeout
            shutdown = self.hosts.driver(host).power_off(
                str(instance.id), timeout, self.settings.shutdown_retry_interval
            )
        self._record(instance, instance.record_powered_off, host=host, shutdown=shutdown)

    def power_on(self, instance: Instance) -> None:
        self.hosts.driver(self._on_host(instance)).power_on(str(instance.id))
        self._record(instance, instance.record_powered_on, host=instance.host)

    def pause(self, instance: Instance) -> None:
        self.hosts.driver(self._on_host(instance)).pause(str(instance.id))
        self._record(instance, instance.record_paused, host=instance.host)

    def unpause(self, instance: Instance) -> None:
        self.hosts.driver(self._on_host(instance)).unpause(str(instance.id))
        self._record(instance, instance.record_unpaused, host=instance.host)

    def suspend(self, instance: Instance) -> None:
        self.hosts.driver(self._on_host(instance)).suspend(str(instance.id))
        self._record(instance, instance.record_suspended, host=instance.host)

    def resume(self, instance: Instance) -> None:
        self.hosts.driver(self._on_host(instance)).resume(str(instance.id))
        self._record(instance, instance.record_resumed, host=instance.host)

    @staticmethod
    def _on_host(instance: Instance) -> str:
        if instance.host is None:
            raise HypervisorError(f"instance {instance.id} has no domain on any host")
        return instance.host

    # ---- shelve steps -----------------------------------------------------------------

    def snapshot(self, instance: Instance) -> None:
        image_id = instance.pending_image_id
        if image_id is None:
            raise HypervisorError(f"instance {instance.id} has no image id to snapshot into")
        name = f"{instance.name}-shelved"
        info = self.images.get(image_id)
        if info is None:  # a partial file from a crash is overwritten, never kept
            try:
                self.hosts.driver(self._on_host(instance)).export_disk(
                    str(instance.id), self.images.path_for(image_id)
                )
            except HypervisorError:
                self.images.delete(image_id)
                raise
            info = self.images.commit(image_id, name, str(instance.id))
        self._record(
            instance, instance.record_snapshotted, host=instance.host, image_id=image_id,
            image_name=name, size=info.size,
        )

    def clean_network(self, instance: Instance) -> None:
        host = instance.network_host or instance.claim_host
        if host is not None:
            self.hosts.driver(host).remove_dhcp_host(instance.mac)
        self._record(instance, instance.record_network_cleaned, host=host)

    def destroy(self, instance: Instance) -> None:
        host = instance.host or instance.claim_host
        if host is not None:
            self._destroy_on(host, instance)
        self._record(instance, instance.record_destroyed, host=host)

    def _destroy_on(self, host: str, instance: Instance) -> None:
        driver = self.hosts.driver(host)
        driver.undefine(str(instance.id))
        if not instance.volume_backed:  # a volume outlives its domain
            driver.delete_disk(str(instance.id))

    def release_claim(self, instance: Instance) -> None:
        host_name = instance.claim_host
        self.failpoints.hit(f"after:{plans.RELEASE_CLAIM}")
        if host_name is not None:
            host = find(self.repo, host_id_for(host_name), Host)
            if host is not None:
                host.release(str(instance.id), instance.user or SERVICE_USER,
                             instance.request_id or "")
                instance.record_claim_released(
                    user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
                    host=host_name,
                )
                self._save(host, instance)  # one transaction: never released twice
                return
        self._record(instance, instance.record_claim_released, host=host_name)

    # ---- unshelve / boot steps -------------------------------------------------------

    def claim(self, instance: Instance) -> None:
        for _ in range(CLAIM_ATTEMPTS):
            host = self._choose_host(instance)
            host.claim(str(instance.id), instance.vcpus, instance.memory_mb, instance.disk_gb,
                       instance.user or SERVICE_USER, instance.request_id or "")
            self.failpoints.hit(f"after:{plans.CLAIM}")
            instance.record_claimed(
                user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
                host=host.name,
            )
            try:
                self._save(host, instance)
                return
            except RecordConflict:
                fresh = find(self.repo, instance.id, Instance)
                if fresh is None or fresh.version != instance.version - 1:
                    raise  # the instance itself moved on: let drive() reload it
                instance = fresh  # only the host moved on: another claim won it; try again
        raise NoRoom(f"gave up claiming after {CLAIM_ATTEMPTS} races for the same hosts")

    def _choose_host(self, instance: Instance) -> Host:
        """The asked-for host, else the one with the most free memory that fits (Nova)."""
        if instance.target_host is not None:
            host = self._placeable(host_id_for(instance.target_host))
            if host is None or host.removed:
                raise NoRoom(f"No valid host was found: no host named {instance.target_host}")
            return host
        need = (instance.vcpus, instance.memory_mb, instance.disk_gb)
        unserved: Host | None = None  # the best host that fits but that no serve performs
        # Rank by what this worker last saw of each host (as Nova's scheduler ranks from its
        # cache), then load only the best candidate afresh: the claim is checked and saved
        # against that fresh copy, so a stale ranking can cost a retry, never an over-commit.
        for cached in sorted(self._known_hosts(), reverse=True,
                             key=lambda host: (host.free()["memory_mb"], host.name)):
            served = self.served is None or self.served(cached.name)
            if not served and unserved is not None:
                continue
            fresh = self._placeable(cached.id)
            if fresh is None or fresh.removed:
                continue
            self._host_cache[fresh.name] = (time.monotonic(), fresh)
            if fresh.fits(*need):
                if served:
                    return fresh
                unserved = fresh
        if unserved is not None:
            # Rather than fail the request: its serve may be restarting, or about to start.
            # The claim waits there until it performs the steps.
            return unserved
        raise NoRoom(
            "No valid host was found. There are not enough hosts available "
            f"for {need[0]} vcpus, {need[1]} MB and {need[2]} GB."
        )

    def _placeable(self, host_id: uuid.UUID) -> Host | None:
        """The host, None if there is none or its events can't be read: such a host is
        left out of placement (and logged), rather than fail every claim on any host."""
        try:
            return find(self.repo, host_id, Host)
        except Unreadable as error:
            self.log.error("host.unreadable", host_id=str(host_id), error=error.reason)
            return None

    def _known_hosts(self) -> list[Host]:
        """Every host as this worker last saw it; views older than HOST_VIEW_SECONDS are
        reloaded, so what other workers claimed or released shows up soon."""
        catalog = find(self.repo, CATALOG_ID, HostCatalog)
        names = catalog.names if catalog else []
        now = time.monotonic()
        for name in names:
            seen = self._host_cache.get(name)
            if seen is None or now - seen[0] > HOST_VIEW_SECONDS:
                host = self._placeable(host_id_for(name))
                if host is not None:
                    self._host_cache[name] = (now, host)
        return [self._host_cache[name][1] for name in names if name in self._host_cache]

    def setup_network(self, instance: Instance) -> None:
        host = instance.claim_host
        if host is None:
            raise HypervisorError(f"instance {instance.id} holds no claim on any host")
        self.hosts.driver(host).add_dhcp_host(instance.mac, instance.ip, instance.name)
        self._record(instance, instance.record_network_set_up, host=host)

    def spawn(self, instance: Instance) -> None:
        host = instance.claim_host
        if host is None:
            raise HypervisorError(f"instance {instance.id} holds no claim on any host")
        image_id = instance.shelved_image_id or instance.image_id
        try:
            machine = self._spawn_on(host, instance, image_id)
        except HypervisorError:
            self._destroy_on(host, instance)  # leave nothing half-built behind
            raise
        self._record(
            instance, instance.record_spawned, host=host, image_id=image_id,
            volume=self._spec(instance).volume_path, machine=machine,
        )

    def _spawn_on(self, host: str, instance: Instance, image_id: str | None) -> str | None:
        driver, spec = self.hosts.driver(host), self._spec(instance)
        image_path = self._image_path(instance, image_id)
        if instance.volume_backed:
            volume = self.volumes.path_for(str(instance.id))
            if instance.vm_state == s.SHELVED_OFFLOADED and not volume.exists():
                raise HypervisorError(f"volume {volume} of instance {instance.id} is missing")
            driver.create_volume(volume, instance.disk_gb, image_path)
        else:
            driver.create_disk(spec, image_path)
        return driver.define_and_start(spec)

    def _image_path(self, instance: Instance, image_id: str | None) -> Path | None:
        if image_id is None or (instance.volume_backed and instance.vm_state != s.BUILDING):
            return None
        if self.images.get(image_id) is None:
            if instance.vm_state == s.SHELVED_OFFLOADED:
                raise ImageNotFound(
                    f"Unshelve attempted but the image {image_id} cannot be found."
                )
            raise ImageNotFound(f"Image {image_id} could not be found.")
        return self.images.path_for(image_id)

    def delete_image(self, instance: Instance) -> None:
        image_id = instance.shelved_image_id or instance.pending_image_id or ""
        self.images.delete(image_id)
        self._record(instance, instance.record_image_deleted, image_id=image_id)

    def delete_volume(self, instance: Instance) -> None:
        self.volumes.delete(str(instance.id))
        self._record(
            instance, instance.record_volume_deleted,
            volume=str(self.volumes.path_for(str(instance.id))),
        )

    # ---- closing ----------------------------------------------------------------------

    def finish(self, instance: Instance) -> None:
        user, request_id = instance.user or SERVICE_USER, instance.request_id or ""
        plan = instance.plan
        instance.record_finish(user, request_id, self.clock())
        if plan == "shelve" and self.settings.shelved_offload_time == 0:
            # Offload at once, in the same transaction: nobody ever sees it idle in between.
            instance.request_shelve_offload(user, request_id, action="shelve")
        if plan != "delete":
            self._keep_unrecorded(instance)
            return
        # The name and the address are free again, in the same transaction as `Deleted`.
        index = find(self.repo, name_index_id(instance.name), NameIndex)
        pool = find(self.repo, address_block_id(block_of(instance.ip)), AddressBlock)
        if index is not None:
            index.free(str(instance.id))
        if pool is not None:
            pool.release(instance.ip, str(instance.id))
        self._save(instance, *(agg for agg in (index, pool) if agg is not None))
