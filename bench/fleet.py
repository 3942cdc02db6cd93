"""Fleet scale-out (issue 18): K `shelf serve --host` processes, each owning H/K of H
test-driver hosts, on one PostgreSQL store; the same workload for each K in one run.

For each K it prints the CPU a shelve-and-unshelve cycle costs, split into the serves,
the bench process (the requests) and the database server (the backends serving the
bench's database, read from /proc); the wake-up latency of requests sent one at a time
to an idle fleet (request recorded -> its first step recorded, and for an unshelve the
handover: claimed -> the claimed host's first step recorded; each from the events'
timestamps, so a step's own few milliseconds are in it); and, idle, the CPU of each serve
and the database's CPU per serve. Then `bench/lifecycle.py`'s figures for one serve on
the same machine, and last `ratio = CPU per cycle at K=8 / at K=1`.

    python -m bench.fleet --store postgres --instances 600 --hosts 16
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import itertools
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from bench import lifecycle
from bench.common import bench_store, figure, machine, note, percentile, store_options
from bench.cpu import CpuMeter
from bench.lifecycle import ShelfRun, timed
from domain.service import new_request_id

Latencies = dict[str, list[float]]


class FleetRun(ShelfRun):
    """`lifecycle.ShelfRun` (K serves with `--host`), measured per group of processes."""

    def backends(self) -> Callable[[], list[int]]:
        """The PostgreSQL backends serving this store's database, but the one asking."""
        conn = psycopg.connect(self.ctx.store.psycopg_conninfo(), autocommit=True)
        self._conns = [*getattr(self, "_conns", []), conn]
        return lambda: [row[0] for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchall()]

    def meter(self) -> CpuMeter:
        return CpuMeter({"serves": lambda: [serve.pid for serve in self.serves],
                         "requests (bench process)": lambda: [os.getpid()],
                         "database server": self.backends()})

    def wakeups(self, count: int, spacing: float) -> Latencies:
        """Shelve, then unshelve, `count` instances one at a time, `spacing` apart."""
        every, chosen = self.ids, self.ids[:count]
        since = datetime.datetime.now(datetime.UTC)
        for action, then, wait_for in (("shelve", "shelved_offloaded", chosen),
                                       ("unshelve", "active", every)):
            for instance_id in chosen:
                self.ctx.service.request(action, instance_id, "bench", new_request_id())
                time.sleep(spacing)
            self.ids = wait_for  # wait_for counts these (the rest are active)
            try:
                self.wait_for(then)
            finally:
                self.ids = every
        return self.latencies([uuid.UUID(text) for text in chosen], since)

    def latencies(self, ids: list[uuid.UUID], since: datetime.datetime) -> Latencies:
        """From the events recorded `since`: request -> next event, and Claimed -> next
        event. (Not the boot's claim: made for a burst of boots, it measured the burst.)"""
        found: Latencies = {"first step": [], "handover": []}
        mapper = self.ctx.app.mapper
        for instance_id in ids:
            events: list[Any] = [mapper.to_domain_event(stored) for stored in
                                 self.ctx.app.recorder.select_events(instance_id)]
            for before, after in itertools.pairwise(events):
                if before.timestamp < since:
                    continue
                kind = type(before).__name__
                seconds = (after.timestamp - before.timestamp).total_seconds()
                if kind in ("ShelveRequested", "UnshelveRequested"):
                    found["first step"].append(seconds)
                elif kind == "ResourcesClaimed":
                    found["handover"].append(seconds)
        return found

    def idle(self, seconds: float) -> CpuMeter:
        meter = CpuMeter({"serves": lambda: [serve.pid for serve in self.serves],
                          "database server": self.backends()})
        time.sleep(1.0)  # the last projections written, the drives' threads at rest
        meter.start()
        time.sleep(seconds)
        meter.stop()
        return meter

    def close(self) -> None:
        for conn in getattr(self, "_conns", []):
            conn.close()
        super().close()


def run_one(args: argparse.Namespace, serves: int) -> dict[str, float]:
    """One K: the cycle's CPU by group, the wake-up latencies, idle CPU."""
    result: dict[str, float] = {}
    with bench_store(args.store) as url:
        fleet = FleetRun(url, args.hosts, args.threads, serves)
        try:
            note(f"fleet K={serves}: booting {args.instances}")
            fleet.boot_all(args.instances)
            meter = fleet.meter()
            note(f"fleet K={serves}: shelving and unshelving")
            timed(lambda: fleet.request_all("shelve", "shelved_offloaded"), meter)
            timed(lambda: fleet.request_all("unshelve", "active"), meter)
            for name, seconds in meter.seconds.items():
                result[name] = 1000 * seconds / args.instances
            result["cpu"] = 1000 * meter.total() / args.instances
            note(f"fleet K={serves}: wake-ups")
            waits = fleet.wakeups(min(args.wakeups, args.instances), args.spacing)
            for name, samples in waits.items():
                for label, fraction in (("p50", 0.5), ("p99", 0.99)):
                    result[f"{name} {label}"] = (
                        1000 * percentile(samples, fraction) if samples else float("nan"))
            note(f"fleet K={serves}: idle {args.idle_seconds:.0f} s")
            idle = fleet.idle(args.idle_seconds)
            for name, seconds in idle.seconds.items():
                result[f"idle {name}"] = 100 * seconds / args.idle_seconds / serves
            fleet.stop_serves()
        finally:
            fleet.close()
    return result


def print_result(serves: int, result: dict[str, float]) -> None:
    print(f"## K={serves} serves")
    figure("CPU per cycle", result["cpu"], "ms")
    for name in ("serves", "requests (bench process)", "database server"):
        figure(f"  {name}", result[name], "ms")
    for name in ("first step", "handover"):
        for label in ("p50", "p99"):
            figure(f"wake-up {name} {label}", result[f"{name} {label}"], "ms")
    figure("idle CPU per serve", result["idle serves"], "% of a core")
    figure("idle database per serve", result["idle database server"], "% of a core")


def lifecycle_figures(args: argparse.Namespace) -> None:
    """bench/lifecycle.py with one serve, as it prints on its own (K=1, no --host)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        lifecycle.main(["--store", args.store, "--instances", str(args.instances),
                        "--hosts", str(args.hosts), "--threads", str(args.threads)])
    for line in out.getvalue().splitlines():
        print(f"lifecycle | {line}")


def measure_each(args: argparse.Namespace, ks: list[int]) -> dict[int, dict[str, float]]:
    """Each K's figures, printed as soon as measured: a K that fails (a server that
    allows too few connections for K serves) is reported in one line, and the rest run."""
    results: dict[int, dict[str, float]] = {}
    for k in ks:
        try:
            results[k] = run_one(args, k)
        except (Exception, SystemExit) as error:
            print(f"## K={k} serves: not measured: {str(error).strip().splitlines()[-1]}",
                  flush=True)
            continue
        print_result(k, results[k])
        sys.stdout.flush()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=600)
    parser.add_argument("--hosts", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4, help="serve --threads")
    parser.add_argument("--serves", default="1,2,4,8,16", help="the Ks, comma-separated")
    parser.add_argument("--wakeups", type=int, default=50,
                        help="requests sent one at a time, per action")
    parser.add_argument("--spacing", type=float, default=0.05, help="seconds between them")
    parser.add_argument("--idle-seconds", type=float, default=12.0)
    store_options(parser)
    parser.set_defaults(store="postgres")
    args = parser.parse_args(argv)
    try:
        ks = sorted({int(k) for k in args.serves.split(",")})
    except ValueError:
        parser.error("--serves must be numbers separated by commas")
    if ks[0] != 1 or ks[-1] > args.hosts:
        parser.error("--serves must start at 1 and none may exceed --hosts")
    print(f"# bench/fleet on postgres, {args.instances} instances, {args.hosts} hosts, "
          f"K serves x {args.threads} threads, {machine()}", flush=True)
    results = measure_each(args, ks)
    if 1 not in results:
        return 1
    lifecycle_figures(args)
    top = max(results)
    figure(f"CPU per cycle K={top} / K=1", results[top]["cpu"] / results[1]["cpu"])
    at = 8 if 8 in results else top
    if at != 8:
        note(f"bench: no K=8 in this run: the ratio is K={at}'s")
    print(f"ratio = {results[at]['cpu'] / results[1]['cpu']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
