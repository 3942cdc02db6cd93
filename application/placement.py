"""Where a claim goes: the host ranking behind the process manager's `placement` port
(domain/drive_ports.py `Placement`). The asked-for host, else the one with the most free
memory that fits (Nova's default weigher), preferring hosts some `serve` performs the
steps on."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from domain.errors import NoRoom, Unreadable
from domain.host import CATALOG_ID, Host, HostCatalog, host_id_for
from domain.instance import Instance
from domain.service import Repository, find

HOST_VIEW_SECONDS = 5.0  # how stale a host may look when ranking (a claim always reloads it)
# A host chosen for a claim counts as claimed in the ranking until the claim is seen saved,
# or for this long (the drive failed, or another process saved it).
CHOSEN_SECONDS = HOST_VIEW_SECONDS


class HostRanking:
    """Ranks from what this process last saw of each host, as Nova's scheduler ranks from
    its cache; the chosen host is always loaded afresh."""

    def __init__(self, repo: Repository, served: Callable[[str], bool] | None = None) -> None:
        self.repo = repo
        # Whether some serve performs the steps on a host (`serve --host`): placement
        # skips one that nobody serves, as Nova's scheduler skips a host whose compute
        # service is down. None: this serve performs every host's steps itself.
        self.served = served
        # name -> (when seen, host): for ranking only, see choose_host()
        self._host_cache: dict[str, tuple[float, Host]] = {}
        # Claims chosen here but not yet seen saved: instance -> (host, memory MB, when).
        # The ranking counts them at once, as Nova's scheduler consumes a request from its
        # host state: concurrent claims of one serve spread over the hosts rather than
        # race for the same best one, where all but one fail to save and try again.
        self._chosen: dict[uuid.UUID, tuple[str, int, float]] = {}
        self._chosen_lock = threading.Lock()
        # One per host: this process makes one claim at a time there (see `claiming`).
        self._claim_locks: dict[str, threading.Lock] = {}
        self._claim_locks_lock = threading.Lock()
        self.log = structlog.get_logger("shelf.process_manager")

    def saw(self, host: Host) -> None:
        """Keeps this worker's ranking view current with what it saved itself."""
        self._host_cache[host.name] = (time.monotonic(), host)
        with self._chosen_lock:
            for instance_id in [key for key, (name, _, _) in self._chosen.items()
                                if name == host.name and str(key) in host.claims]:
                del self._chosen[instance_id]

    @contextmanager
    def claiming(self, host_name: str) -> Iterator[bool]:
        with self._claim_locks_lock:
            lock = self._claim_locks.setdefault(host_name, threading.Lock())
        waited = not lock.acquire(blocking=False)
        if waited:
            lock.acquire()
        try:
            yield waited
        finally:
            lock.release()

    def choose_host(self, instance: Instance) -> Host:
        """The asked-for host, else the one with the most free memory that fits (Nova)."""
        if instance.target_host is not None:
            host = self._placeable(host_id_for(instance.target_host))
            if host is None or host.removed:
                raise NoRoom(f"No valid host was found: no host named {instance.target_host}")
            return host
        need = (instance.vcpus, instance.memory_mb, instance.disk_gb)
        unserved: Host | None = None  # the best host that fits but that no serve performs
        # Rank by what this worker last saw of each host, less the claims it is making
        # there, then load only the best candidate afresh: the claim is checked and saved
        # against that fresh copy, so a stale ranking can cost a retry, never an over-commit.
        for cached in self._ranked(instance, self._known_hosts()):
            self._choose(instance, cached)  # before the load: others rank it lower now
            served = self.served is None or self.served(cached.name)
            if not served and unserved is not None:
                continue
            fresh = self._placeable(cached.id)
            if fresh is None or fresh.removed:
                continue
            self._host_cache[fresh.name] = (time.monotonic(), fresh)
            if fresh.fits(*need):
                if served:
                    return self._choose(instance, fresh)
                unserved = fresh
        if unserved is not None:
            # Rather than fail the request: its serve may be restarting, or about to start.
            # The claim waits there until it performs the steps.
            return self._choose(instance, unserved)
        with self._chosen_lock:
            self._chosen.pop(instance.id, None)  # no claim to make
        raise NoRoom(
            "No valid host was found. There are not enough hosts available "
            f"for {need[0]} vcpus, {need[1]} MB and {need[2]} GB."
        )

    def _ranked(self, instance: Instance, hosts: list[Host]) -> list[Host]:
        """`hosts`, most free memory first, less the claims chosen here and not seen saved
        (but `instance`'s own: tried again after a lost race); the first is chosen for
        `instance` at once, so that a claim ranking next sees it (forgets the expired)."""
        now = time.monotonic()
        memory: dict[str, int] = {}
        with self._chosen_lock:
            self._chosen.pop(instance.id, None)
            for key, (name, memory_mb, when) in list(self._chosen.items()):
                if now - when > CHOSEN_SECONDS:
                    del self._chosen[key]
                else:
                    memory[name] = memory.get(name, 0) + memory_mb
            ranked = sorted(hosts, reverse=True, key=lambda host: (
                host.free()["memory_mb"] - memory.get(host.name, 0), host.name))
            if ranked:
                self._chosen[instance.id] = (ranked[0].name, instance.memory_mb, now)
        return ranked

    def _choose(self, instance: Instance, host: Host) -> Host:
        with self._chosen_lock:
            self._chosen[instance.id] = (host.name, instance.memory_mb, time.monotonic())
        return host

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
