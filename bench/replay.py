"""Replay speed: rebuild every projection from N stored events, against a raw SELECT of the
same rows with no decoding (plain tuples, as the rebuild reads them). Prints events/s of
each and `ratio = rebuild / raw` last.

    python -m bench.replay --events 100000 --store postgres [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import time

from application.bootstrap import Context
from bench.common import figure, machine, seeded_context, store_options
from projections.reading import EventReader
from projections.runner import REBUILD_BATCH, ProjectionRunner


def raw_select_seconds(ctx: Context, batch: int) -> tuple[int, float]:
    """Read every stored event's row, in the rebuild's batch size, decoding nothing."""
    reader = EventReader(ctx.db, ctx.app.mapper)
    started, rows, last = time.monotonic(), 0, 0
    while True:
        page = reader.rows(last, batch)
        if not page:
            return rows, time.monotonic() - started
        rows += len(page)
        last = page[-1][0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes replaying at once, as `projections rebuild --jobs`")
    store_options(parser)
    args = parser.parse_args(argv)
    with seeded_context(args.store, args.keep, args.events, args.hosts) as (ctx, stored):
        runner = ProjectionRunner(ctx.app, ctx.db)
        started = time.monotonic()
        replayed = runner.rebuild(jobs=args.jobs)
        rebuild_seconds = time.monotonic() - started
        rows, raw_seconds = raw_select_seconds(ctx, REBUILD_BATCH)
    rebuild_rate, raw_rate = replayed / rebuild_seconds, rows / raw_seconds
    print(f"# bench/replay on {ctx.store.backend}, --jobs {args.jobs}, {machine()}")
    figure("events stored", stored)
    figure("rebuild seconds", rebuild_seconds, "s")
    figure("rebuild events/s", rebuild_rate, "events/s")
    figure("raw select events/s", raw_rate, "rows/s")
    print(f"ratio = {rebuild_rate / raw_rate:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
