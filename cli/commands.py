"""What each `shelf` command does: parse is in main.py, printing in render.py, and the work
in the application layer (`application/`), which the HTTP API calls too."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from adapters.failpoints import EnvFailpoints
from adapters.logs import batched_log_lines
from application import flavors, lifecycle, maintenance, queries
from application.bootstrap import Context
from application.identity import Caller, operating_system_caller
from application.times import parse_time
from application.waiting import wait_for_idle
from cli import render

INSTANCE_COLUMNS = ("id", "name", "project_id", "status", "task_state", "power_state", "host")
HOST_COLUMNS = ("name", "uri", "vcpus", "vcpus_used", "memory_mb", "memory_mb_used",
                "disk_gb", "disk_gb_used", "storage", "instances", "statuses")
AUDIT_COLUMNS = ("position", "start_time", "action", "instance_name", "project_id", "host",
                 "user", "result", "finish_time", "request_id", "message")
IMAGE_COLUMNS = ("id", "name", "format", "virtual_size", "size", "created_at", "store_id")
QUARANTINE_COLUMNS = ("position", "projection", "aggregate_id", "version", "reason")
FLAVOR_COLUMNS = ("id", "name", "vcpus", "memory_mb", "disk_gb", "ephemeral_gb", "swap_mb",
                  "is_public")


def caller(args: argparse.Namespace) -> Caller:
    """Who the CLI records as asking: the operating-system user (it holds the store's
    credentials), acting in `--project` where a command has one."""
    return operating_system_caller(getattr(args, "project", None))


def _as_of(args: argparse.Namespace) -> str | None:
    return parse_time(args.as_of) if args.as_of else None


def _print(rows: Any, columns: tuple[str, ...], as_json: bool) -> None:
    if as_json:
        render.print_json(rows)
    else:
        render.print_table(rows, columns)


def _wait(ctx: Context, recorded: lifecycle.Recorded, args: argparse.Namespace) -> None:
    if args.wait:
        on_step = render.print_step if sys.stdout.isatty() else None
        wait_for_idle(ctx, recorded.instance_id, recorded.request_id, args.timeout, on_step)
        for left in lifecycle.left_without_host(ctx, recorded):  # a delete says so
            print(f"{recorded.instance_id}: deleted without host {left['host']} "
                  f"({left['step']}: {left['reason']})")


# ---- hosts ------------------------------------------------------------------------------

def host_add(ctx: Context, args: argparse.Namespace) -> int:
    host = lifecycle.add_host(ctx, caller(args), args.name, args.uri, args.vcpus,
                              args.memory_mb, args.disk_gb, args.connect_timeout,
                              virt_type=args.virt_type, storage=args.storage)
    print(host["name"])
    return 0


def host_remove(ctx: Context, args: argparse.Namespace) -> int:
    for instance in lifecycle.remove_host(ctx, caller(args), args.name, args.force):
        print(f"{instance['id']} {instance['name']}: deleted without host {args.name}; "
              "what is left there is for `shelf reconcile`")
    print(args.name)
    return 0


def host_list(ctx: Context, args: argparse.Namespace) -> int:
    _print(queries.list_hosts(ctx, _as_of(args)), HOST_COLUMNS, args.json)
    return 0


# ---- instances ----------------------------------------------------------------------------

def boot(ctx: Context, args: argparse.Namespace) -> int:
    recorded = lifecycle.boot(
        ctx, caller(args), name=args.name, flavor=args.flavor, vcpus=args.vcpus,
        memory_mb=args.memory_mb, disk_gb=args.disk_gb, host=args.host, image=args.image,
        volume_backed=args.volume_backed,
    )
    print(recorded.instance_id, flush=True)
    _wait(ctx, recorded, args)
    return 0


def instance_request(ctx: Context, args: argparse.Namespace) -> int:
    """shelve, shelve-offload, unshelve, start, stop, pause, unpause, suspend, resume, delete."""
    recorded = lifecycle.request(ctx, caller(args), args.action, args.instance,
                                 getattr(args, "host", None))
    _wait(ctx, recorded, args)
    return 0


def list_instances(ctx: Context, args: argparse.Namespace) -> int:
    wanted = queries.InstanceFilter(project_id=args.project)
    _print(queries.list_instances(ctx, wanted), INSTANCE_COLUMNS, args.json)
    return 0


def show(ctx: Context, args: argparse.Namespace) -> int:
    view = queries.show_instance(ctx, args.instance, _as_of(args))
    if args.json:
        render.print_json(view)
    else:
        render.print_fields(view)
    return 0


def console_log(ctx: Context, args: argparse.Namespace) -> int:
    for line in queries.console_log(ctx, args.instance, args.lines):
        print(line)
    return 0


def history(ctx: Context, args: argparse.Namespace) -> int:
    _print(queries.instance_history(ctx, args.instance),
           ("version", "timestamp", "event", "user", "request_id"), args.json)
    return 0


def actions(ctx: Context, args: argparse.Namespace) -> int:
    listed = queries.instance_actions(ctx, args.instance)
    if args.json:
        render.print_json(listed)
    else:
        render.print_actions(listed)
    return 0


def audit(ctx: Context, args: argparse.Namespace) -> int:
    page = queries.audit(ctx, queries.AuditQuery(
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        instance=args.instance, project=args.project, host=args.host, action=args.action,
        user=args.user, result=args.result, after=args.after, limit=args.limit, events=args.events,
    ))
    render.print_rows(page, AUDIT_COLUMNS, args.format)
    if args.limit and len(page) == args.limit:
        render.note(f"more actions follow: next page with --after {page[-1]['position']}")
    return 0


# ---- flavors -----------------------------------------------------------------------------

def flavor_create(ctx: Context, args: argparse.Namespace) -> int:
    created = flavors.create_flavor(
        ctx, caller(args), name=args.name, vcpus=args.vcpus, memory_mb=args.memory_mb,
        disk_gb=args.flavor_disk_gb, flavor_id=args.id, ephemeral_gb=args.ephemeral_gb,
        swap_mb=args.swap_mb, is_public=not args.private, description=args.description,
    )
    print(created["id"])
    return 0


def flavor_list(ctx: Context, args: argparse.Namespace) -> int:
    _print(queries.list_flavors(ctx), FLAVOR_COLUMNS, args.json)
    return 0


def flavor_delete(ctx: Context, args: argparse.Namespace) -> int:
    flavors.delete_flavor(ctx, caller(args), args.flavor)
    return 0


# ---- projections --------------------------------------------------------------------------

def projections_rebuild(ctx: Context, args: argparse.Namespace) -> int:
    jobs = args.jobs if args.jobs is not None else os.cpu_count() or 1
    rebuilt = maintenance.rebuild_projections(ctx, args.names, jobs,
                                              render.progress("rebuilding"))
    print(f"rebuilt {', '.join(args.names) or 'all projections'}: {rebuilt.events} events "
          f"in {rebuilt.seconds:.1f} s ({rebuilt.rate:,.0f} events/s)")
    return 0


def projections_status(ctx: Context, args: argparse.Namespace) -> int:
    rows = queries.projections_status(ctx)
    if args.json:
        render.print_json(rows)
        return 0
    render.print_table([row | {"quarantined": len(row["quarantined"])} for row in rows],
                       ("name", "position", "head", "lag", "quarantined"))
    quarantined = [entry for row in rows for entry in row["quarantined"]]
    if quarantined:
        print("\nquarantined events (stepped past; they stay in the store, "
              "a rebuild tries them again):")
        render.print_table(sorted(quarantined, key=lambda q: q["position"]),
                           QUARANTINE_COLUMNS)
    return 0


# ---- images -------------------------------------------------------------------------------

def image_import(ctx: Context, args: argparse.Namespace) -> int:
    print(lifecycle.import_image(ctx, args.name, Path(args.file))["id"])
    return 0


def image_list(ctx: Context, args: argparse.Namespace) -> int:
    _print(queries.list_images(ctx), IMAGE_COLUMNS, args.json)
    return 0


# ---- the worker ---------------------------------------------------------------------------

def serve(ctx: Context, args: argparse.Namespace) -> int:
    from application.worker import Worker, pool_size  # and structlog: other commands don't
    from domain.process_manager import Settings  # pay for them

    ctx.connect_timeout = args.connect_timeout  # before the first host connection
    ctx.pool_size = pool_size(args.threads)  # before the store is opened
    settings = Settings(
        shelved_offload_time=args.shelved_offload_time,
        shutdown_timeout=args.shutdown_timeout,
        shutdown_retry_interval=args.shutdown_retry_interval,
        hosts=maintenance.owned_hosts(ctx, args.hosts),
    )
    worker = Worker(ctx, settings, EnvFailpoints(), threads=args.threads)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with batched_log_lines():  # a line per step from every drive thread: see there
        worker.run(stop, once=args.once)
    return 0


# ---- reconcile ----------------------------------------------------------------------------

def reconcile_command(ctx: Context, args: argparse.Namespace) -> int:
    differences = maintenance.differences(ctx, args.all)
    if args.fix and differences:
        for difference in maintenance.fix(ctx, caller(args), differences):
            print(f"fixed {difference.kind} {difference.subject} {difference.host or ''}")
        differences = maintenance.differences(ctx, args.all)
    rows = [vars(difference) for difference in differences]
    if args.json:
        render.print_json(rows)
    elif rows:
        render.print_table(rows, ("kind", "host", "subject", "detail"))
    else:
        print("clean: the store and every host agree")
    return 1 if maintenance.unsettled(differences) else 0
