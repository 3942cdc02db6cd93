"""Replay speed: rebuild every projection from N stored events, against a raw SELECT of the
same rows with no decoding. Prints events/s of each and `ratio = rebuild / raw` last.

    python -m bench.replay --events 100000 --store postgres
"""

from __future__ import annotations

import argparse
import time

from bench.common import bench_store, ensure_events, figure, machine, raw_table, store_options
from cli.bootstrap import Context
from projections.runner import ProjectionRunner


def raw_select_seconds(ctx: Context, batch: int) -> tuple[int, float]:
    """Read every stored event's row, in the rebuild's batch size, decoding nothing."""
    table = raw_table(ctx.store)
    position = "rowid" if ctx.store.backend == "sqlite" else "notification_id"
    started, rows, last = time.monotonic(), 0, 0
    while True:
        page = ctx.db.query(f"SELECT {position} AS position, originator_id, "
                            f"originator_version, topic, state FROM {table} "
                            f"WHERE {position} > ? ORDER BY {position} LIMIT {batch}", (last,))
        if not page:
            return rows, time.monotonic() - started
        rows += len(page)
        last = page[-1]["position"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=20)
    store_options(parser)
    args = parser.parse_args(argv)
    with bench_store(args.store, args.keep) as url:
        ctx = Context(url, "bench")
        try:
            stored = ensure_events(ctx, args.events, args.hosts)
            runner = ProjectionRunner(ctx.app, ctx.db)
            started = time.monotonic()
            replayed = runner.rebuild()
            rebuild_seconds = time.monotonic() - started
            rows, raw_seconds = raw_select_seconds(ctx, 5000)
        finally:
            ctx.close()
    rebuild_rate, raw_rate = replayed / rebuild_seconds, rows / raw_seconds
    print(f"# bench/replay on {ctx.store.backend}, {machine()}")
    figure("events stored", stored)
    figure("rebuild seconds", rebuild_seconds, "s")
    figure("rebuild events/s", rebuild_rate, "events/s")
    figure("raw select events/s", raw_rate, "rows/s")
    print(f"ratio = {rebuild_rate / raw_rate:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
