"""What each `shelf` command does: parse is in main.py, printing in render.py."""

from __future__ import annotations

import argparse
import signal
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.failpoints import EnvFailpoints
from adapters.libvirt_host import open_host
from cli import render
from cli.bootstrap import Context
from cli.waiting import wait_for_idle
from cli.worker import Worker
from domain.errors import NotFound, UsageError
from domain.instance import Instance
from domain.process_manager import Settings
from domain.reconcile import Difference, fix_leaks, reconcile
from domain.service import all_hosts, find, new_request_id, resolve_host, resolve_instance
from projections.audit import actions_from_history, event_record
from projections.views import host_view, instance_from_row, instance_view

INSTANCE_COLUMNS = ("id", "name", "status", "task_state", "power_state", "host")
HOST_COLUMNS = ("name", "uri", "vcpus", "vcpus_used", "memory_mb", "memory_mb_used",
                "disk_gb", "disk_gb_used", "instances")
IMAGE_COLUMNS = ("id", "name", "format", "virtual_size", "size", "created_at")


# ---- hosts ------------------------------------------------------------------------------

def host_add(ctx: Context, args: argparse.Namespace) -> int:
    vcpus, memory_mb, disk_gb = args.vcpus, args.memory_mb, args.disk_gb
    if None in (vcpus, memory_mb, disk_gb):  # defaults from libvirt itself
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
    hosts = [host_view(host) for host in all_hosts(ctx.repo)]
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
    ctx.projector.catch_up()
    rows = ctx.db.query("SELECT * FROM instances WHERE vm_state != 'deleted' ORDER BY created_at")
    views = [instance_from_row(row) for row in rows]
    if args.json:
        render.print_json(views)
    else:
        render.print_table(views, INSTANCE_COLUMNS)
    return 0


def show(ctx: Context, args: argparse.Namespace) -> int:
    view = instance_view(resolve_instance(ctx.repo, args.instance))
    if args.json:
        render.print_json(view)
    else:
        render.print_fields(view)
    return 0


def history(ctx: Context, args: argparse.Namespace) -> int:
    records = _history_of(ctx, args.instance)
    if args.json:
        render.print_json(records)
    else:
        render.print_table(records, ("version", "timestamp", "event", "user", "request_id"))
    return 0


def actions(ctx: Context, args: argparse.Namespace) -> int:
    found = actions_from_history(_history_of(ctx, args.instance))
    if args.json:
        render.print_json(found)
        return 0
    for action in found:
        print(f"{action['start_time']}  {action['action']:<14} {action['result'] or 'Running':<8}"
              f" {action['request_id']}  {action['user']}")
        for step in action["events"]:
            print(f"    {step['event']:<14} {step['result']:<8} {step['host'] or '-':<10}"
                  f" {step['details'] or ''}")
    return 0


def _history_of(ctx: Context, ref: str) -> list[dict[str, Any]]:
    instance = resolve_instance(ctx.repo, ref)
    return [event_record(event) for event in ctx.app.events.get(instance.id)]


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
    settings = Settings(
        shelved_offload_time=args.shelved_offload_time,
        shutdown_timeout=args.shutdown_timeout,
        shutdown_retry_interval=args.shutdown_retry_interval,
    )
    worker = Worker(ctx, settings, EnvFailpoints(), threads=args.threads)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker.run(stop, once=args.once)
    return 0




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
    ctx.projector.catch_up()
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
