"""The steps of the plans (domain/plans.py), one method each: act on the hypervisor or the
image and volume stores only if still needed (every HostDriver method is idempotent), then
record the result as the instance's next event. The process manager (domain/
process_manager.py) picks the step and runs it; `records` decides when the events reach
the store, `placement` where a claim goes (both ports: domain/drive_ports.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain import plans
from domain import states as s
from domain.drive_ports import Placement, StepRecords
from domain.errors import NoRoom
from domain.host import Host, host_id_for
from domain.instance import Instance
from domain.ports import (
    ALREADY_OFF,
    DomainSpec,
    Failpoints,
    HostDrivers,
    HypervisorError,
    ImageNotFound,
    ImageStore,
    VolumeStore,
)
from domain.registry import AddressBlock, NameIndex, address_block_id, block_of, name_index_id
from domain.service import RecordConflict, Repository, find

if TYPE_CHECKING:
    from domain.process_manager import Settings

CLAIM_ATTEMPTS = 10
SERVICE_USER = "shelf"


class Steps:
    """The step bodies; the process manager is one of these, with the drive around them."""

    repo: Repository
    hosts: HostDrivers
    images: ImageStore
    volumes: VolumeStore
    settings: Settings
    failpoints: Failpoints
    clock: Callable[[], datetime]
    records: StepRecords
    placement: Placement

    # ---- recording helpers ------------------------------------------------------------

    def _record(
        self, instance: Instance, method: Callable[..., None], **fields: Any
    ) -> Instance:
        """Record the step's event on `instance`, the object the drive goes on with (when
        the event reaches the store is `records`' choice). The `after:` failpoint fires
        between the side effect and its record."""
        self.failpoints.hit(f"after:{plans.next_step(instance)}")
        method(user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
               **fields)
        return instance

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

    def power_off(self, instance: Instance) -> Instance:
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
        return self._record(instance, instance.record_powered_off, host=host, shutdown=shutdown)

    def power_on(self, instance: Instance) -> Instance:
        self.hosts.driver(self._on_host(instance)).power_on(str(instance.id))
        return self._record(instance, instance.record_powered_on, host=instance.host)

    def pause(self, instance: Instance) -> Instance:
        self.hosts.driver(self._on_host(instance)).pause(str(instance.id))
        return self._record(instance, instance.record_paused, host=instance.host)

    def unpause(self, instance: Instance) -> Instance:
        self.hosts.driver(self._on_host(instance)).unpause(str(instance.id))
        return self._record(instance, instance.record_unpaused, host=instance.host)

    def suspend(self, instance: Instance) -> Instance:
        self.hosts.driver(self._on_host(instance)).suspend(str(instance.id))
        return self._record(instance, instance.record_suspended, host=instance.host)

    def resume(self, instance: Instance) -> Instance:
        self.hosts.driver(self._on_host(instance)).resume(str(instance.id))
        return self._record(instance, instance.record_resumed, host=instance.host)

    @staticmethod
    def _on_host(instance: Instance) -> str:
        if instance.host is None:
            raise HypervisorError(f"instance {instance.id} has no domain on any host")
        return instance.host

    # ---- shelve steps -----------------------------------------------------------------

    def snapshot(self, instance: Instance) -> Instance:
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
        return self._record(
            instance, instance.record_snapshotted, host=instance.host, image_id=image_id,
            image_name=name, size=info.size,
        )

    def clean_network(self, instance: Instance) -> Instance:
        host = instance.network_host or instance.claim_host
        if host is not None:
            self.hosts.driver(host).remove_dhcp_host(instance.mac)
        return self._record(instance, instance.record_network_cleaned, host=host)

    def destroy(self, instance: Instance) -> Instance:
        host = instance.host or instance.claim_host
        if host is not None:
            self._destroy_on(host, instance)
        return self._record(instance, instance.record_destroyed, host=host)

    def _destroy_on(self, host: str, instance: Instance) -> None:
        driver = self.hosts.driver(host)
        driver.undefine(str(instance.id))
        if not instance.volume_backed:  # a volume outlives its domain
            driver.delete_disk(str(instance.id))

    def release_claim(self, instance: Instance) -> Instance:
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
                self.records.save(host, instance)  # one transaction: never released twice
                self.placement.saw(host)
                return instance
        return self._record(instance, instance.record_claim_released, host=host_name)

    # ---- unshelve / boot steps -------------------------------------------------------

    def claim(self, instance: Instance) -> Instance:
        for _ in range(CLAIM_ATTEMPTS):
            chosen = self.placement.choose_host(instance)
            try:
                with self.placement.claiming(chosen.name) as waited:
                    if self._claim_on(chosen, instance, waited):
                        return instance
            except RecordConflict:
                fresh = find(self.repo, instance.id, Instance)
                if fresh is None or fresh.version != instance.version - 1:
                    raise  # the instance itself moved on: let drive() reload it
                instance = fresh  # only the host moved on: another claim won it; try again
        raise NoRoom(f"gave up claiming after {CLAIM_ATTEMPTS} races for the same hosts")

    def _claim_on(self, chosen: Host, instance: Instance, waited: bool) -> bool:
        """Claim and save on `chosen`, loaded again if this claim `waited` for another of
        this process there; False if it no longer fits and another host may be chosen
        (an asked-for host raises NoRoom instead)."""
        host = (find(self.repo, chosen.id, Host) or chosen) if waited else chosen
        need = (instance.vcpus, instance.memory_mb, instance.disk_gb)
        if instance.target_host is None and not host.fits(*need):
            return False
        host.claim(str(instance.id), *need, instance.user or SERVICE_USER,
                   instance.request_id or "")
        self.failpoints.hit(f"after:{plans.CLAIM}")
        instance.record_claimed(
            user=instance.user or SERVICE_USER, request_id=instance.request_id or "",
            host=host.name,
        )
        self.records.save(host, instance)
        self.placement.saw(host)
        return True

    def setup_network(self, instance: Instance) -> Instance:
        host = instance.claim_host
        if host is None:
            raise HypervisorError(f"instance {instance.id} holds no claim on any host")
        self.hosts.driver(host).add_dhcp_host(instance.mac, instance.ip, instance.name)
        return self._record(instance, instance.record_network_set_up, host=host)

    def spawn(self, instance: Instance) -> Instance:
        host = instance.claim_host
        if host is None:
            raise HypervisorError(f"instance {instance.id} holds no claim on any host")
        image_id = instance.shelved_image_id or instance.image_id
        try:
            machine = self._spawn_on(host, instance, image_id)
        except HypervisorError:
            self._destroy_on(host, instance)  # leave nothing half-built behind
            raise
        return self._record(
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

    def delete_image(self, instance: Instance) -> Instance:
        image_id = instance.shelved_image_id or instance.pending_image_id or ""
        self.images.delete(image_id)
        return self._record(instance, instance.record_image_deleted, image_id=image_id)

    def delete_volume(self, instance: Instance) -> Instance:
        self.volumes.delete(str(instance.id))
        return self._record(
            instance, instance.record_volume_deleted,
            volume=str(self.volumes.path_for(str(instance.id))),
        )

    # ---- closing ----------------------------------------------------------------------

    def finish(self, instance: Instance) -> Instance:
        user, request_id = instance.user or SERVICE_USER, instance.request_id or ""
        plan = instance.plan
        instance.record_finish(user, request_id, self.clock())
        if plan == "shelve" and self.settings.shelved_offload_time == 0:
            # Offload at once, in the same transaction: nobody ever sees it idle in between.
            instance.request_shelve_offload(user, request_id, action="shelve")
        if plan != "delete":
            return instance  # its events go with a later step's, or when the drive stops
        # The name and the address are free again, in the same transaction as `Deleted`.
        index = find(self.repo, name_index_id(instance.name), NameIndex)
        pool = find(self.repo, address_block_id(block_of(instance.ip)), AddressBlock)
        if index is not None:
            index.free(str(instance.id))
        if pool is not None:
            pool.release(instance.ip, str(instance.id))
        self.records.save(instance, *(agg for agg in (index, pool) if agg is not None))
        return instance
