"""Compute API latency and throughput over a store of 100,000 instances.

`shelf api` runs in a process of its own on a seeded store; this process is the client,
over loopback, with keep-alive connections as the openstack client has. Measured: p50/p99
of `GET /v2.1/servers/{id}`, `GET /v2.1/servers/detail?limit=100` and a `shelve` action
POST (recording only: no `serve` runs, so each stays requested), one request at a time;
then requests/s of `GET /v2.1/servers/{id}` with 8 concurrent clients. Prints the figures
and `ratio = worst p99 of show and shelve / 20 ms` last (below 1 is within the target).

    python -m bench.api --instances 100000 --store postgres --keep
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from application.bootstrap import Context
from bench.common import bench_store, figure, machine, median, note, percentile, store_options
from bench.seed import FLEET_LIVES, seed_store

TARGET_MS = 20.0
ADMIN = {"X-Auth-Token": "admin:admin", "OpenStack-API-Version": "compute 2.96"}


def ensure_instances(ctx: Context, instances: int, hosts: int) -> int:
    """Seed until the store has recorded at least `instances` boots; return how many."""
    have = _count(ctx, "SELECT count(*) AS n FROM instances")
    round_number = 0
    while have < instances:
        round_number += 1
        note(f"seeding {instances - have} instances")
        seed_store(ctx.app, instances - have, hosts=hosts, seed=have + round_number,
                   lives=FLEET_LIVES)
        have = _count(ctx, "SELECT count(*) AS n FROM instances")
    return have


def _count(ctx: Context, sql: str) -> int:
    ctx.projector.catch_up(batch=5000)
    return int(ctx.db.query(sql)[0]["n"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def api_process(store: str) -> Iterator[str]:
    url = f"http://127.0.0.1:{_free_port()}"
    data = tempfile.TemporaryDirectory(prefix="shelf-bench-api-", dir="/var/tmp")
    api = subprocess.Popen([sys.executable, "-m", "cli.main", "--store", store, "api",
                            "--listen", url.removeprefix("http://"), "--auth", "noauth"],
                           env={**os.environ, "SHELF_DATA_DIR": data.name})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or api.poll() is not None:
                    raise SystemExit("bench: shelf api did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        api.terminate()
        api.wait(timeout=30)
        data.cleanup()


def timed(client: httpx.Client, send: Callable[[httpx.Client], httpx.Response],
          samples: int, expect: int) -> list[float]:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        answer = send(client)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != expect:
            raise SystemExit(f"bench: {answer.request.url} answered {answer.status_code}: "
                             f"{answer.text[:200]}")
    return times


async def _throughput(url: str, ids: list[str], clients: int, seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds
    rng = random.Random(11)

    async def one_client() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as client:
            while time.perf_counter() < stop_at:
                answer = await client.get(f"/v2.1/servers/{rng.choice(ids)}")
                answer.raise_for_status()
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return done / (time.perf_counter() - started)


def measure(url: str, live: list[str], active: list[str], samples: int, clients: int,
            seconds: float) -> dict[str, float]:
    rng = random.Random(7)
    to_shelve = iter(rng.sample(active, min(samples, len(active))))
    with httpx.Client(base_url=url, headers=ADMIN, timeout=30) as client:
        # warm up: the connection and the API's first store context
        client.get("/v2.1/servers", params={"limit": 1, "all_tenants": 1})
        show = timed(client, lambda c: c.get(f"/v2.1/servers/{rng.choice(live)}"),
                     samples, 200)
        detail = timed(client, lambda c: c.get("/v2.1/servers/detail",
                                               params={"limit": 100, "all_tenants": 1}),
                       samples, 200)
        shelve = timed(client, lambda c: c.post(f"/v2.1/servers/{next(to_shelve)}/action",
                                                json={"shelve": None}),
                       min(samples, len(active)), 202)
    rate = asyncio.run(_throughput(url, live, clients, seconds))
    return {"show p50": median(show), "show p99": percentile(show, 0.99),
            "detail?limit=100 p50": median(detail),
            "detail?limit=100 p99": percentile(detail, 0.99),
            "shelve POST p50": median(shelve), "shelve POST p99": percentile(shelve, 0.99),
            f"show req/s, {clients} clients": rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    store_options(parser)
    args = parser.parse_args(argv)
    with bench_store(args.store, args.keep) as url:
        ctx = Context(url)
        try:
            instances = ensure_instances(ctx, args.instances, args.hosts)
            live = [r["id"] for r in ctx.db.query(
                "SELECT id FROM instances WHERE vm_state != 'deleted'")]
            active = [r["id"] for r in ctx.db.query(
                "SELECT id FROM instances WHERE vm_state = 'active' AND task_state IS NULL")]
            backend = ctx.store.backend
        finally:
            ctx.close()
        with api_process(url) as api_url:
            figures = measure(api_url, live, active, args.samples, args.clients,
                              args.seconds)
    print(f"# bench/api on {backend}, {machine()}")
    figure("instances", instances)
    figure("live instances", len(live))
    for name, value in figures.items():
        figure(name, value, "req/s" if "req/s" in name else "ms")
    worst = max(figures["show p99"], figures["shelve POST p99"])
    print(f"ratio = {worst / TARGET_MS:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
