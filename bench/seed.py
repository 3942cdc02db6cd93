"""Fill a store with a long, random, realistic history, fast.

The events are the real ones: the real LifecycleService records the requests and the real
ProcessManager performs every step against libvirt test-driver hosts. What differs from
`serve` is only how they are saved: a unit of work keeps them in memory and writes many
instances' events in one transaction (a store of a million events in minutes, not hours).
A seeded random choice of operations, including deletes and injected hypervisor errors
(the `error` failpoint, at random), makes the history varied but reproducible.
"""

from __future__ import annotations

import contextlib
import pickle
import random
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from adapters.eventstore import ShelfApplication
from adapters.images import DirectoryImageStore
from adapters.libvirt_host import LibvirtHosts
from adapters.volumes import DirectoryVolumeStore
from application.placement import HostRanking
from application.step_recording import StepRecorder
from domain.errors import ShelfError
from domain.host import Host, host_id_for
from domain.instance import Instance
from domain.ports import HypervisorError
from domain.process_manager import ProcessManager, Settings
from domain.registry import NameIndex
from domain.service import LifecycleService, find, new_request_id

USERS = ("alice", "bob", "carol", "ops-bot")


@dataclass(frozen=True)
class Lives:
    """How eventful each seeded instance's life is after its boot."""

    actions: tuple[int, ...]  # drawn from: how many requests it gets
    delete_rate: float


# Varied lives: what the incremental == rebuilt tests want (about 17 events an instance).
RICH_LIVES = Lives(actions=(0, 1, 1, 2, 3), delete_rate=0.4)
# A fleet that mostly just runs, where instances come and go: issue 4's 100,000 instances.
# The shelf network (10.213.0.0/16) has addresses for about 65,000 live instances, so
# 100,000 boots need deletes, and deletes add events: 38% are deleted and one in twenty
# gets a request, about 12.7 events an instance. `--events 1270000` is 100,000 instances,
# 63,000 of them live; a million events is about 79,000.
FLEET_LIVES = Lives(actions=(0,) * 19 + (1,), delete_rate=0.38)


class UnitOfWork:
    """The Repository port, buffering every saved event until `flush` (one transaction).

    `get` hands out a copy of the last saved state, as the store would, so a step that
    fails after changing its copy leaves nothing behind, as in `serve`.
    """

    def __init__(self, app: ShelfApplication) -> None:
        self.app = app
        self._saved: dict[uuid.UUID, Any] = {}
        self._events: list[Any] = []
        self.flushed = 0

    def get(self, aggregate_id: uuid.UUID) -> Any:
        if aggregate_id not in self._saved:
            try:
                self._saved[aggregate_id] = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                raise KeyError(aggregate_id) from None
        return _copy(self._saved[aggregate_id])

    def save(self, *aggregates: Any) -> None:
        for aggregate in aggregates:
            self._events += aggregate.collect_events()
            self._saved[aggregate.id] = _copy(aggregate)

    def flush(self) -> int:
        if self._events:
            self.app.save(*self._events)
        written, self._events = len(self._events), []
        self.flushed += written
        return written

    def forget_instances(self) -> None:
        """Drop the cached instances and names, which grow with the seed; keep the hosts,
        the catalog and the address blocks, which every boot reads again (this unit of
        work is their only writer, so its copies stay true, and reloading a host from
        thousands of unsnapshotted events after each flush made seeding quadratic)."""
        self._saved = {k: v for k, v in self._saved.items()
                       if not isinstance(v, Instance | NameIndex)}

    def snapshot_hosts(self) -> None:
        """Snapshots of the hosts, as `serve` would have taken them, for later readers."""
        for aggregate_id, aggregate in self._saved.items():
            if isinstance(aggregate, Host):
                with contextlib.suppress(IntegrityError):  # one is there at this version
                    self.app.take_snapshot(aggregate_id)


def _copy(aggregate: Any) -> Any:
    return pickle.loads(pickle.dumps(aggregate, pickle.HIGHEST_PROTOCOL))  # deepcopy, faster


class RandomErrors:
    """The `error` failpoint, fired at random before a hypervisor step."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate = rng, rate

    def hit(self, name: str) -> None:
        if name.startswith("before:") and self.rng.random() < self.rate:
            raise HypervisorError(f"failpoint {name} injected an error")


@dataclass
class Seeder:
    app: ShelfApplication
    work_dir: Path
    hosts: int = 4
    seed: int = 1
    error_rate: float = 0.02
    flush_every: int = 50  # instances per transaction
    lives: Lives = RICH_LIVES
    on_flush: Callable[[], None] = lambda: None
    host_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.repo = UnitOfWork(self.app)
        self.service = LifecycleService(self.repo)
        uris: dict[str, str] = {}
        self.drivers = LibvirtHosts(uris.__getitem__, self.work_dir / "data")
        self._uris = uris
        self.pm = ProcessManager(
            self.repo, self.drivers, DirectoryImageStore(self.work_dir / "data" / "images"),
            DirectoryVolumeStore(self.work_dir / "data" / "volumes"), StepRecorder(self.repo),
            HostRanking(self.repo), Settings(shutdown_timeout=0),
            RandomErrors(self.rng, self.error_rate),
        )

    def add_hosts(self) -> None:
        for number in range(self.hosts):
            name = f"seed-{number:03d}"
            node = self.work_dir / f"{name}.xml"
            node.write_text("<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>64</cores>"
                            "<threads>1</threads><active>64</active><mhz>2000</mhz></cpu>"
                            "<memory>268435456</memory></node>\n")
            self._uris[name] = f"test://{node}"
            if find(self.repo, host_id_for(name), Host) is None:  # else: an earlier seed's
                self.service.add_host(name, self._uris[name], 100_000, 100_000_000,
                                      10_000_000, "admin", new_request_id())
            self.host_names.append(name)
        self.repo.flush()

    def run(self, instances: int) -> int:
        """Give `instances` instances a random life each; return the events written."""
        if not self.host_names:
            self.add_hosts()
        for number in range(instances):
            self.live_one(f"vm-{self.seed}-{number}")
            if (number + 1) % self.flush_every == 0:
                self._flush()
        self._flush()
        self.repo.snapshot_hosts()
        return self.repo.flushed

    def _flush(self) -> None:
        self.repo.flush()
        self.repo.forget_instances()
        self.on_flush()

    def live_one(self, name: str) -> None:
        user = self.rng.choice(USERS)
        instance = self.service.boot(
            name=name, host=self.rng.choice(self.host_names), vcpus=1, memory_mb=64,
            disk_gb=1, image_id=None, volume_backed=self.rng.random() < 0.2, user=user,
            request_id=new_request_id())
        self.pm.drive(instance.id)
        for _ in range(self.rng.choice(self.lives.actions)):
            action = self.rng.choice(("shelve", "shelve", "stop", "start", "pause", "unpause",
                                      "suspend", "resume", "shelveOffload", "unshelve"))
            self.request(instance.id, action, user)
            if self.repo.get(instance.id).vm_state in ("shelved_offloaded", "shelved"):
                self.request(instance.id, "unshelve", user)
        if self.rng.random() < self.lives.delete_rate:
            self.request(instance.id, "delete", user)

    def request(self, instance_id: uuid.UUID, action: str, user: str) -> None:
        try:
            self.service.request(action, str(instance_id), user, new_request_id(),
                                 self._target_host(action))
        except ShelfError:
            return  # refused in this state, as a real request would be: nothing recorded
        self.pm.drive(instance_id)

    def _target_host(self, action: str) -> str | None:
        if action == "unshelve" and self.rng.random() < 0.3:
            return self.rng.choice(self.host_names)
        return None

    def close(self) -> None:
        self.drivers.close()


def seed_store(app: ShelfApplication, instances: int, hosts: int = 4, seed: int = 1,
               on_flush: Callable[[], None] = lambda: None, lives: Lives = RICH_LIVES) -> int:
    """A random history of `instances` instances on `hosts` hosts; returns events written."""
    with tempfile.TemporaryDirectory(prefix="shelf-seed-", dir="/var/tmp") as work:
        seeder = Seeder(app, Path(work), hosts=hosts, seed=seed, on_flush=on_flush,
                        lives=lives)
        try:
            return seeder.run(instances)
        finally:
            seeder.close()

