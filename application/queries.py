"""The read side: what `list`, `show`, `actions`, `history`, `console-log`, `audit`,
`host list`, `image list`, `flavor list` and `projections status` print, and what the HTTP
API renders.

Every query first catches the projections up (one indexed query when nothing is new), so
a read never misses what was recorded before it. Moments are ISO 8601 text in UTC, as
`application.times.parse_time` makes them. Each returns plain dicts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adapters.consoles import console_log_path, last_lines
from application import validation
from application.bootstrap import Context
from application.flavors import flavor_view
from domain.errors import NotFound, UsageError
from domain.flavor import all_flavors, resolve_flavor
from domain.instance import Instance
from domain.service import resolve_instance
from projections import queries as read
from projections.views import instance_view

InstanceFilter = read.InstanceFilter  # project_id, status, host, include_deleted, ...


def list_instances(ctx: Context, wanted: InstanceFilter | None = None) -> list[dict[str, Any]]:
    """Instances not deleted (unless `include_deleted`), oldest first (unless
    `newest_first`), `show`'s fields for each. `wanted.project_id`: only that project's;
    `wanted.name`: a regular expression found in the name (Nova's `?name=`), UsageError
    when unreadable. A `marker` that is no instance of the list's project is NotFound."""
    wanted = wanted or InstanceFilter()
    validation.whole_number(wanted.limit, "limit", validation.LIST_LIMIT)
    if wanted.name is not None:
        try:
            re.compile(wanted.name)
        except re.error:
            raise UsageError(f"Invalid regular expression for name: {wanted.name}") from None
    ctx.catch_up()
    if wanted.marker is not None:
        marked = read.instance(ctx.db, wanted.marker)
        if marked is None or wanted.project_id not in (None, marked["project_id"]):
            raise NotFound(f"marker [{wanted.marker}] not found")
    return read.live_instances(ctx.db, wanted)


def show_instance(
    ctx: Context, instance: str, as_of: str | None = None, project: str | None = None,
) -> dict[str, Any]:
    """One instance (id or name) now, or as its own events had left it at `as_of`. With
    `project`, only that project's (another project's is NotFound, as Nova hides it); the
    same holds for `instance_history` and `instance_actions`."""
    found = resolve_instance(ctx.repo, instance, project)
    ctx.catch_up()
    if as_of is not None:
        return _instance_as_of(ctx, found, as_of)
    row = read.instance(ctx.db, str(found.id))
    # Behind the instance's own events when one of them was quarantined.
    return row if row and row["version"] >= found.version else instance_view(found)


def current_instance(ctx: Context, instance: str, project: str | None = None) -> dict[str, Any]:
    """One instance (id or name) now, as `show_instance` gives it, from its own events
    alone: no projection to catch up first (what the API's per-server requests need)."""
    return instance_view(resolve_instance(ctx.repo, instance, project))


def _instance_as_of(ctx: Context, found: Instance, moment: str) -> dict[str, Any]:
    version = read.version_at(ctx.db, str(found.id), moment)
    if version is None:
        raise NotFound(f"instance {found.id} did not exist at {moment}")
    return instance_view(ctx.app.repository.get(found.id, version=version))


def instance_history(
    ctx: Context, instance: str, project: str | None = None,
) -> list[dict[str, Any]]:
    """Every event of one instance, oldest first."""
    found = resolve_instance(ctx.repo, instance, project)
    ctx.catch_up()
    return read.history(ctx.db, str(found.id))


def instance_actions(
    ctx: Context, instance: str, project: str | None = None,
) -> list[dict[str, Any]]:
    """One instance's actions (Nova's instance actions), each with its `events`."""
    found = resolve_instance(ctx.repo, instance, project)
    ctx.catch_up()
    return read.actions(ctx.db, str(found.id))


def console_log(ctx: Context, instance: str, lines: int | None = None) -> list[str]:
    """The instance's serial console as its host logged it (the last `lines` lines)."""
    if lines is not None and lines < 1:
        raise UsageError(f"--lines must be 1 or more, not {lines}")
    found = resolve_instance(ctx.repo, instance)
    if found.host is None:
        raise NotFound(f"instance {found.id} has no console log: it is on no host")
    path = console_log_path(ctx.data_dir, found.host, str(found.id))
    try:
        return last_lines(path, lines)
    except FileNotFoundError:
        raise NotFound(f"instance {found.id} has no console log yet ({path})") from None


@dataclass(frozen=True)
class AuditQuery:
    """What `audit` filters on; None matches anything. `limit` 0 means no limit."""

    since: str | None = None
    until: str | None = None
    instance: str | None = None  # an id or name
    project: str | None = None  # the instances' project
    host: str | None = None
    action: str | None = None
    user: str | None = None
    result: str | None = None
    after: int = 0
    limit: int = 100
    events: bool = False  # each action with its events


def audit(ctx: Context, query: AuditQuery) -> list[dict[str, Any]]:
    """One page of actions across the fleet, oldest first; the next page starts after the
    last one's `position`."""
    validation.whole_number(query.limit, "--limit", validation.AUDIT_LIMIT)
    instance_id = (str(resolve_instance(ctx.repo, query.instance, query.project).id)
                   if query.instance else None)
    wanted = read.AuditFilter(
        since=query.since, until=query.until, instance_id=instance_id,
        project_id=query.project, host=query.host,
        action=query.action, user=query.user, result=query.result, after=query.after,
        limit=query.limit,
    )
    ctx.catch_up()
    page = read.audit(ctx.db, wanted)
    return read.with_events(ctx.db, page) if query.events else page


def list_hosts(ctx: Context, as_of: str | None = None) -> list[dict[str, Any]]:
    """Every host with its capacity and usage, now or at `as_of`."""
    ctx.catch_up()
    return read.hosts_as_of(ctx.db, as_of) if as_of is not None else read.hosts(ctx.db)


def list_images(ctx: Context) -> list[dict[str, Any]]:
    """Every image in the image store (a shelved one is `<name>-shelved`)."""
    return [dict(vars(info)) for info in ctx.images.list()]


def list_flavors(ctx: Context) -> list[dict[str, Any]]:
    """Every live flavor, by name (`flavor_view`'s fields)."""
    return [flavor_view(flavor) for flavor in all_flavors(ctx.repo)]


def show_flavor(ctx: Context, flavor: str) -> dict[str, Any]:
    """One live flavor, by id or name."""
    return flavor_view(resolve_flavor(ctx.repo, flavor))


def projections_status(ctx: Context) -> list[dict[str, Any]]:
    """Each projection's position, the store's head, the lag between them, and the events
    it quarantined (projections/quarantine.py)."""
    quarantined = [vars(entry) for entry in ctx.projector.quarantined()]
    return [{"name": s.name, "position": s.position, "head": s.head, "lag": s.lag,
             "quarantined": [q for q in quarantined if q["projection"] == s.name]}
            for s in ctx.projector.status()]


def served_hosts(ctx: Context, names: Iterable[str]) -> set[str] | None:
    """Those of the hosts whose steps some `serve` performs now (Nova's compute service
    up): a serve of that host or of every host holds its lease. None: not known now."""
    return ctx.serving.served(names)
