"""Read latency at scale: p50/p99 of `show`, `actions`, `audit --instance` and
`audit --host` over a store of 1,000,000 events (100,000 instances' worth by default).

Each query runs through the CLI's own command functions on one open store, as `shelf`
does after start-up (the start-up itself, importing Python, is printed apart). Prints
the figures and `ratio = worst p99 / 50 ms` last (the budget: below 1 is within it).

    python -m bench.audit --events 1000000 --store postgres --keep
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from application.bootstrap import Context
from bench.common import (
    figure,
    machine,
    median,
    note,
    percentile,
    seeded_context,
    store_options,
)
from cli.main import build_parser

BUDGET_MS = 50.0


def timed_command(ctx: Context, argv: list[str]) -> float:
    """Milliseconds for one command, output discarded."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = args.func(ctx, args)
    elapsed = (time.perf_counter() - started) * 1000
    if code != 0:
        raise SystemExit(f"bench: shelf {' '.join(argv)} exited {code}")
    return elapsed


def sample(ctx: Context, samples: int, rng: random.Random) -> dict[str, list[float]]:
    ids = [row["id"] for row in ctx.db.query("SELECT id FROM instances")]
    hosts = [row["name"] for row in ctx.db.query("SELECT name FROM host_usage")]
    queries: dict[str, Callable[[], list[str]]] = {
        "show": lambda: ["show", rng.choice(ids), "--json"],
        "actions": lambda: ["actions", rng.choice(ids), "--json"],
        "audit --instance": lambda: ["audit", "--instance", rng.choice(ids), "--format",
                                     "json"],
        "audit --host": lambda: ["audit", "--host", rng.choice(hosts), "--format", "json"],
    }
    return {name: [timed_command(ctx, make()) for _ in range(samples)]
            for name, make in queries.items()}


def process_start_ms(url: str) -> float:
    """One whole `shelf show` process, for reference: Python start-up dominates it."""
    shelf = str(Path(sys.executable).with_name("shelf"))
    started = time.perf_counter()
    subprocess.run([shelf, "--store", url, "projections", "status"], check=True,
                   capture_output=True)
    return (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--samples", type=int, default=200)
    store_options(parser)
    args = parser.parse_args(argv)
    with seeded_context(args.store, args.keep, args.events, args.hosts) as (ctx, stored):
        note("catching the projections up")
        ctx.projector.catch_up(batch=5000)
        instances = ctx.db.query("SELECT count(*) AS n FROM instances")[0]["n"]
        timings = sample(ctx, args.samples, random.Random(7))
        startup = process_start_ms(ctx.store.url)
    print(f"# bench/audit on {ctx.store.backend}, {machine()}")
    figure("events stored", stored)
    figure("instances", instances)
    for name, values in timings.items():
        figure(f"{name} p50", median(values), "ms")
        figure(f"{name} p99", percentile(values, 0.99), "ms")
    figure("whole process (reference)", startup, "ms")
    worst = max(percentile(values, 0.99) for values in timings.values())
    print(f"ratio = {worst / BUDGET_MS:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
