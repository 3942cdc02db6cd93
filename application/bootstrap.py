"""The composition root: the one place that wires adapters to the domain, for every
entrypoint (the CLI and the HTTP API build one `Context` each and share nothing else)."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.eventstore import (
    DEFAULT_STORE,
    EventStoreRepository,
    ShelfApplication,
    StoreURL,
    open_application,
    parse_store_url,
)
from adapters.failpoints import EnvFailpoints
from adapters.images import DirectoryImageStore
from adapters.logs import ensure_configured
from adapters.serving import ServingLook
from adapters.volumes import DirectoryVolumeStore
from domain.errors import NotFound
from domain.ports import HostDrivers
from domain.service import LifecycleService, resolve_host
from domain.store_identity import StoreMark, identify_store, known_mark
from projections.db import Database
from projections.runner import ProjectionRunner

if TYPE_CHECKING:  # the process manager (and structlog) only for commands that drive
    from application.step_recording import StepRecorder
    from domain.ports import Failpoints
    from domain.process_manager import ProcessManager, Settings


def default_data_dir() -> Path:
    """Images, volumes and local disks: $SHELF_DATA_DIR, else a per-user or system place."""
    configured = os.environ.get("SHELF_DATA_DIR")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/shelf")
    return Path.home() / ".local" / "share" / "shelf"


class Context:
    """Everything one CLI invocation, `serve` or API process needs, built on first use."""

    def __init__(
        self, store_url: str | None = None, data_dir: Path | None = None,
        hosts: HostDrivers | None = None,
    ) -> None:
        self.store: StoreURL = parse_store_url(
            store_url or os.environ.get("SHELF_STORE") or DEFAULT_STORE
        )
        self.data_dir = (data_dir or default_data_dir()).absolute()
        self._hosts = hosts
        self._owns_hosts = hosts is None  # a caller's connections stay open for the caller
        # Set by an entrypoint that shows a long catch-up to a person (the CLI on a tty).
        self.catch_up_progress: Callable[[int, int], None] | None = None
        self.connect_timeout: float | None = None  # `--connect-timeout`, else the environment's
        # At most this many connections to PostgreSQL for the events (serve's, set before
        # the store is opened: application/worker.py `pool_size`); None: eventsourcing's.
        self.pool_size: int | None = None
        # Told, once, how many events the projections have quarantined (if any).
        self.on_quarantined: Callable[[int], None] | None = None

    @cached_property
    def app(self) -> ShelfApplication:
        return open_application(self.store, self.pool_size)

    @cached_property
    def repo(self) -> EventStoreRepository:
        return EventStoreRepository(self.app, self.store)

    @cached_property
    def service(self) -> LifecycleService:
        mark = self.__dict__.get("mark")  # set by identify() in commands that boot
        return LifecycleService(self.repo, mark.address_start if mark else 0)

    @cached_property
    def db(self) -> Database:
        return Database(self.store)

    @cached_property
    def projector(self) -> ProjectionRunner:
        failpoints = os.environ.get("SHELF_FAILPOINTS")
        return ProjectionRunner(self.app, self.db,
                                failpoint=EnvFailpoints(failpoints) if failpoints else None)

    def catch_up(self) -> None:
        """Bring the projections up to date before reading them (`serve` usually has)."""
        self.projector.catch_up(progress=self.catch_up_progress)
        told, self.on_quarantined = self.on_quarantined, None
        if told is not None and (count := len(self.projector.quarantined())):
            told(count)

    @cached_property
    def mark(self) -> StoreMark | None:
        """This store's identity, None until a command that writes made it."""
        return known_mark(self.repo)

    def identify(self) -> StoreMark:
        """This store's identity, made now if it has none: every command that writes (or
        makes anything outside the store) calls this first."""
        mark = self.mark or identify_store(self.repo)
        self.__dict__["mark"] = mark
        if "images" in self.__dict__:
            self.images.store_id = mark.store_id
        return mark

    @cached_property
    def images(self) -> DirectoryImageStore:
        known = self.__dict__.get("mark")  # reading the store for it is identify()'s job
        return DirectoryImageStore(self.data_dir / "images", known.store_id if known else None)

    @cached_property
    def volumes(self) -> DirectoryVolumeStore:
        return DirectoryVolumeStore(self.data_dir / "volumes")

    @cached_property
    def serving(self) -> ServingLook:
        """Whether some `serve` performs a host's steps (looked at, never taken)."""
        return ServingLook(self.store, self.db.query)

    @property
    def hosts(self) -> HostDrivers:
        if self._hosts is None:
            from adapters.libvirt_connection import ConnectionBounds  # only commands that
            from adapters.libvirt_host import LibvirtHosts  # need hosts load libvirt

            bounds = ConnectionBounds.from_env(connect_timeout=self.connect_timeout)
            self._hosts = LibvirtHosts(self.host_uri, self.data_dir, bounds,
                                       self.host_virt_type, lambda: self.__dict__.get("mark"),
                                       self.host_storage)
        return self._hosts

    def host_uri(self, name: str) -> str:
        """Looked up on every new connection: hosts added while `serve` runs are found."""
        try:
            return resolve_host(self.repo, name).uri
        except NotFound:
            raise KeyError(name) from None

    def host_virt_type(self, name: str) -> str:
        return str(getattr(resolve_host(self.repo, name), "virt_type", "auto"))

    def host_storage(self, name: str) -> str:
        """The storage strategy recorded when the host was added (copy: before it was)."""
        return str(getattr(resolve_host(self.repo, name), "storage", "copy"))

    def process_manager(
        self, settings: Settings, failpoints: Failpoints | None = None,
        served: Callable[[str], bool] | None = None, records: StepRecorder | None = None,
    ) -> ProcessManager:
        """`served`: whether some serve performs a host's steps (placement prefers those);
        `records`: the commit policy, if the caller asks it something too (the worker)."""
        from application.placement import HostRanking
        from application.step_recording import StepRecorder
        from domain.process_manager import ProcessManager

        ensure_configured()  # it logs through structlog directly
        self.identify()
        return ProcessManager(
            self.repo, self.hosts, self.images, self.volumes,
            records or StepRecorder(self.repo), HostRanking(self.repo, served),
            settings, failpoints,
        )

    def close(self) -> None:
        if self._owns_hosts and self._hosts is not None and hasattr(self._hosts, "close"):
            self._hosts.close()
        if "serving" in self.__dict__:
            self.serving.close()
        if "db" in self.__dict__:
            self.db.close()
        if "app" in self.__dict__:
            self.app.close()
