"""What the benches share: a store to run against, a seeded history, and how to print."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from adapters.eventstore import StoreURL, parse_store_url
from adapters.logs import configure_logging
from application.bootstrap import Context
from bench.seed import FLEET_LIVES, seed_store

PG_ADMIN = os.environ.get("SHELF_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
EVENTS_PER_INSTANCE = 12.7  # FLEET_LIVES' average: sizes the first round of seeding


def store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default="sqlite",
                        help="sqlite or postgres (a fresh store), or a store URL to reuse")
    parser.add_argument("--keep", action="store_true", help="keep a fresh store afterwards")


@contextmanager
def bench_store(choice: str, keep: bool = False) -> Iterator[str]:
    """A store URL: the one given, or a fresh SQLite file / PostgreSQL database."""
    configure_logging(os.environ.get("SHELF_LOG_LEVEL", "error"))
    if "://" in choice:
        yield choice
        return
    if choice == "sqlite":
        folder = tempfile.mkdtemp(prefix="shelf-bench-", dir="/var/tmp")
        try:
            yield f"sqlite:///{folder}/shelf.db"
        finally:
            if keep:
                note(f"store kept: sqlite:///{folder}/shelf.db")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        return
    if choice != "postgres":
        raise SystemExit(f"bench: --store must be sqlite, postgres or a URL, not {choice!r}")
    name = f"shelf_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    finally:
        if keep:
            note(f"store kept: {PG_ADMIN.rsplit('/', 1)[0]}/{name}")
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_events(ctx: Context, events: int, hosts: int) -> int:
    """Seed the store until it holds at least `events` events; return how many it holds."""
    have = ctx.app.recorder.max_notification_id() or 0
    round_number = 0
    while have < events:
        round_number += 1
        missing = events - have
        instances = max(1, round(missing / EVENTS_PER_INSTANCE))
        started = time.monotonic()
        note(f"seeding {instances} instances ({missing} events to go)")
        seed_store(ctx.app, instances, hosts=hosts, seed=have + round_number,
                   lives=FLEET_LIVES)
        have = ctx.app.recorder.max_notification_id() or 0
        note(f"  store holds {have} events ({time.monotonic() - started:.0f} s)")
    return have


def parse(text: str) -> StoreURL:
    return parse_store_url(text)


@contextmanager
def seeded_context(choice: str, keep: bool, events: int, hosts: int
                   ) -> Iterator[tuple[Context, int]]:
    """An open Context on a bench store holding at least `events` events, and how many
    it holds (what `replay` and `audit` both start from)."""
    with bench_store(choice, keep) as url:
        ctx = Context(url)
        try:
            yield ctx, ensure_events(ctx, events, hosts)
        finally:
            ctx.close()


def machine() -> str:
    cpus = os.cpu_count()
    return f"{platform.node()} {platform.machine()} {cpus} cpus, Python {platform.python_version()}"


def figure(name: str, value: float, unit: str = "") -> None:
    print(f"{name:<28} {value:>14,.2f} {unit}".rstrip())


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def note(message: str) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)


def tmp_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
