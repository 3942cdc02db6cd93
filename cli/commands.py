"""What each `shelf` command does: parse is in main.py, printing in render.py."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.failpoints import EnvFailpoints
from adapters.logs import batched_log_lines
from cli import render
from cli.bootstrap import Context
from cli.times import parse_time
from cli.waiting import wait_for_idle
from domain.errors import NotFound, UsageError
from domain.instance import Instance
from domain.reconcile import Difference, fix_leaks, reconcile
from domain.service import all_hosts, find, new_request_id, resolve_host, resolve_instance
from projections import queries
from projections.views import instance_view

INSTANCE_COLUMNS = ("id", "name", "status", "task_state", "power_state", "host")
HOST_COLUMNS = ("name", "uri", "vcpus", "vcpus_used", "memory_mb", "memory_mb_used",
                "disk_gb", "disk_gb_used", "instances", "statuses")
AUDIT_COLUMNS = ("position", "start_time", "action", "instance_name", "host", "user",
                 "result", "finish_time", "request_id", "message")
IMAGE_COLUMNS = ("id", "name", "format", "virtual_size", "size", "created_at")


def catch_up(ctx: Context) -> None:
    """Bring the projections up to date before reading them (`serve` usually has)."""
    ctx.projector.catch_up(progress=render.progress("catching up the projections"))


# ---- hosts ------------------------------------------------------------------------------

def host_add(ctx: Context, args: argparse.Namespace) -> int:
    vcpus, memory_mb, disk_gb = args.vcpus, args.memory_mb, args.disk_gb
    if None in (vcpus, memory_mb, disk_gb):  # defaults from libvirt itself
        from adapters.libvirt_host import open_host  # libvirt loads only when needed

        driver = open_host(args.name, args.uri, ctx.data_dir)
        try:
            capacity = driver.capacity()
        finally:
            driver.close()
        vcpus = vcpus or capacity.vcpus
        memory_mb = memory_mb or capacity.memory_mb
        disk_gb = disk_gb or capacity.disk_gb
    host = ctx.service.add_host(args.name, args.uri, vcpus, memory_mb, disk_gb,
                                ctx.user, new_request_id())
    print(host.name)
    return 0


def host_list(ctx: Context, args: argparse.Namespace) -> int:
    catch_up(ctx)
    if args.as_of:
        hosts = queries.hosts_as_of(ctx.db, parse_time(args.as_of))
    else:
        hosts = queries.hosts(ctx.db)
    if args.json:
        render.print_json(hosts)
    else:
        render.print_table(hosts, HOST_COLUMNS)
    return 0


# ---- instances ----------------------------------------------------------------------------

def boot(ctx: Context, args: argparse.Namespace) -> int:
    image_id = None
    if args.image:
        image = ctx.images.find(args.image)
        if image is None:
            raise NotFound(f"no such image: {args.image}")
        image_id = image.id
    request_id = new_request_id()
    instance = ctx.service.boot(
        name=args.name, host=args.host, vcpus=args.vcpus, memory_mb=args.memory_mb,
        disk_gb=args.disk_gb, image_id=image_id, volume_backed=args.volume_backed,
        user=ctx.user, request_id=request_id,
    )
    print(instance.id, flush=True)
    if args.wait:
        wait_for_idle(ctx, instance.id, request_id, args.timeout)
    return 0


def instance_request(ctx: Context, args: argparse.Namespace) -> int:
    """shelve, shelve-offload, unshelve, start, stop, pause, unpause, suspend, resume, delete."""
    request_id = new_request_id()
    instance = ctx.service.request(
        args.action, args.instance, ctx.user, request_id, getattr(args, "host", None)
    )
    if args.wait:
        wait_for_idle(ctx, instance.id, request_id, args.timeout)
    return 0


def list_instances(ctx: Context, args: argparse.Namespace) -> int:
    catch_up(ctx)
    views = queries.live_instances(ctx.db)
    if args.json:
        render.print_json(views)
    else:
        render.print_table(views, INSTANCE_COLUMNS)
    return 0


def show(ctx: Context, args: argparse.Namespace) -> int:
    found = resolve_instance(ctx.repo, args.instance)
    if args.as_of:
        view = _instance_as_of(ctx, found, parse_time(args.as_of))
    else:
        catch_up(ctx)
        view = queries.instance(ctx.db, str(found.id)) or instance_view(found)
    if args.json:
        render.print_json(view)
    else:
        render.print_fields(view)
    return 0


def _instance_as_of(ctx: Context, found: Instance, moment: str) -> dict[str, Any]:
    """The instance as its own events up to `moment` leave it."""
    catch_up(ctx)
    version = queries.version_at(ctx.db, str(found.id), moment)
    if version is None:
        raise NotFound(f"instance {found.id} did not exist at {moment}")
    return instance_view(ctx.app.repository.get(found.id, version=version))


def history(ctx: Context, args: argparse.Namespace) -> int:
    found = resolve_instance(ctx.repo, args.instance)
    catch_up(ctx)
    records = queries.history(ctx.db, str(found.id))
    if args.json:
        render.print_json(records)
    else:
        render.print_table(records, ("version", "timestamp", "event", "user", "request_id"))
    return 0


def actions(ctx: Context, args: argparse.Namespace) -> int:
    found = resolve_instance(ctx.repo, args.instance)
    catch_up(ctx)
    listed = queries.actions(ctx.db, str(found.id))
    if args.json:
        render.print_json(listed)
    else:
        render.print_actions(listed)
    return 0


def audit(ctx: Context, args: argparse.Namespace) -> int:
    instance_id = str(resolve_instance(ctx.repo, args.instance).id) if args.instance else None
    if args.limit < 0:
        raise UsageError(f"--limit must be 0 (no limit) or more, not {args.limit}")
    wanted = queries.AuditFilter(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        instance_id=instance_id, host=args.host, action=args.action, user=args.user,
        result=args.result, after=args.after, limit=args.limit,
    )
    catch_up(ctx)
    page = queries.audit(ctx.db, wanted)
    if args.events:
        page = queries.with_events(ctx.db, page)
    render.print_rows(page, AUDIT_COLUMNS, args.format)
    if args.limit and len(page) == args.limit:
        render.note(f"more actions follow: next page with --after {page[-1]['position']}")
    return 0


# ---- projections --------------------------------------------------------------------------

def projections_rebuild(ctx: Context, args: argparse.Namespace) -> int:
    jobs = args.jobs if args.jobs is not None else os.cpu_count() or 1
    if jobs < 1:
        raise UsageError(f"--jobs must be 1 or more, not {jobs}")
    started = time.monotonic()
    events = ctx.projector.rebuild(args.names, progress=render.progress("rebuilding"),
                                   jobs=jobs)
    seconds = time.monotonic() - started
    rate = events / seconds if seconds > 0 else 0.0
    print(f"rebuilt {', '.join(args.names) or 'all projections'}: {events} events "
          f"in {seconds:.1f} s ({rate:,.0f} events/s)")
    return 0


def projections_status(ctx: Context, args: argparse.Namespace) -> int:
    rows = [{"name": s.name, "position": s.position, "head": s.head, "lag": s.lag}
            for s in ctx.projector.status()]
    if args.json:
        render.print_json(rows)
    else:
        render.print_table(rows, ("name", "position", "head", "lag"))
    return 0


# ---- images -------------------------------------------------------------------------------

def image_import(ctx: Context, args: argparse.Namespace) -> int:
    source = Path(args.file)
    if not source.is_file():
        raise NotFound(f"no such file: {source}")
    try:
        info = ctx.images.import_file(args.name, source)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(info.id)
    return 0


def image_list(ctx: Context, args: argparse.Namespace) -> int:
    images = [vars(info) for info in ctx.images.list()]
    if args.json:
        render.print_json(images)
    else:
        render.print_table(images, IMAGE_COLUMNS)
    return 0


# ---- the worker ---------------------------------------------------------------------------

def serve(ctx: Context, args: argparse.Namespace) -> int:
    from cli.worker import Worker  # and structlog: other commands don't pay for them
    from domain.process_manager import Settings

    settings = Settings(
        shelved_offload_time=args.shelved_offload_time,
        shutdown_timeout=args.shutdown_timeout,
        shutdown_retry_interval=args.shutdown_retry_interval,
        hosts=_owned_hosts(ctx, args.hosts),
    )
    worker = Worker(ctx, settings, EnvFailpoints(), threads=args.threads)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with batched_log_lines():  # a line per step from every drive thread: see there
        worker.run(stop, once=args.once)
    return 0


def _owned_hosts(ctx: Context, names: list[str] | None) -> frozenset[str] | None:
    """`serve --host`: each must be a host the store knows (a typo would leave its
    instances waiting for ever)."""
    if not names:
        return None
    for name in names:
        resolve_host(ctx.repo, name)
    return frozenset(names)


# ---- reconcile ----------------------------------------------------------------------------

def reconcile_command(ctx: Context, args: argparse.Namespace) -> int:
    differences = _differences(ctx)
    if args.fix and differences:
        fixed = fix_leaks(differences, ctx.hosts, ctx.images, _claim_releaser(ctx))
        for difference in fixed:
            print(f"fixed {difference.kind} {difference.subject} {difference.host or ''}")
        differences = _differences(ctx)
    rows = [vars(difference) for difference in differences]
    if args.json:
        render.print_json(rows)
    elif rows:
        render.print_table(rows, ("kind", "host", "subject", "detail"))
    else:
        print("clean: the store and every host agree")
    return 1 if differences else 0


def _differences(ctx: Context) -> list[Difference]:
    catch_up(ctx)
    ids = [row["id"] for row in ctx.db.query("SELECT id FROM instances")]
    instances = [i for i in (find(ctx.repo, uuid.UUID(x), Instance) for x in ids) if i]
    return reconcile(instances, all_hosts(ctx.repo), ctx.hosts, ctx.images,
                     ctx.images.partials())


def _claim_releaser(ctx: Context) -> Callable[[str, str], None]:
    def release(host_name: str, instance_id: str) -> None:
        host = resolve_host(ctx.repo, host_name)
        host.release(instance_id, ctx.user, new_request_id())
        ctx.repo.save(host)

    return release
