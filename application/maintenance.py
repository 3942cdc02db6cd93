"""Keeping the store and the world in step: rebuilding the projections, reconciling the
store with every host, and checking `serve --host`'s hosts."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from application import validation
from application.bootstrap import Context
from application.identity import Caller
from domain.instance import Instance
from domain.ownership import FOREIGN
from domain.reconcile import Difference, fix_leaks, reconcile
from domain.service import all_hosts, find, new_request_id, resolve_host

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Rebuilt:
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def rebuild_projections(
    ctx: Context, names: list[str], jobs: int, progress: Progress | None = None,
) -> Rebuilt:
    """Empty the named projections (all when none) and replay them from the store."""
    validation.whole_number(jobs, "--jobs", validation.JOBS)
    started = time.monotonic()
    events = ctx.projector.rebuild(names, progress=progress, jobs=jobs)
    return Rebuilt(events, time.monotonic() - started)


def differences(ctx: Context, include_foreign: bool = False) -> list[Difference]:
    """Where the store and the hosts (libvirt, the image store) disagree about what is
    this store's; with include_foreign, also what other stores or tools made
    (docs/ownership.md)."""
    store_id = ctx.identify().store_id
    ctx.catch_up()
    ids = [row["id"] for row in ctx.db.query("SELECT id FROM instances")]
    instances = [i for i in (find(ctx.repo, uuid.UUID(x), Instance) for x in ids) if i]
    return reconcile(instances, all_hosts(ctx.repo), ctx.hosts, ctx.images,
                     ctx.images.partials(), store_id=store_id,
                     include_foreign=include_foreign)


def unsettled(found: list[Difference]) -> bool:
    """Whether any difference is this store's (a foreign thing is none)."""
    return any(not difference.kind.startswith(FOREIGN) for difference in found)


def fix(ctx: Context, caller: Caller, found: list[Difference]) -> list[Difference]:
    """Remove the leaks no instance owns among `found`; the ones fixed."""
    def release(host_name: str, instance_id: str) -> None:
        host = resolve_host(ctx.repo, host_name)
        host.release(instance_id, caller.user_name, new_request_id())
        ctx.repo.save(host)

    return fix_leaks(found, ctx.hosts, ctx.images, release)


def owned_hosts(ctx: Context, names: list[str] | None) -> frozenset[str] | None:
    """`serve --host`: each must be a host the store knows (a typo would leave its
    instances waiting for ever). None: every host."""
    if not names:
        return None
    for name in names:
        resolve_host(ctx.repo, name)
    return frozenset(names)
