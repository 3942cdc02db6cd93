"""Replay projections in several processes at once (a rebuild's `--jobs`).

Each process opens the store itself and replays its own group of projections from the
start, as one runner would: every group's rows and tracking positions still commit
together, batch by batch, so a process that dies leaves its group at a consistent
position, and the next catch-up goes on from there. Processes are spawned, not forked:
a fork would share the parent's database connections and pool threads.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

from adapters.eventstore import open_application, parse_store_url
from projections.db import Database
from projections.runner import Progress, ProjectionRunner, all_projections

PROGRESS_SECONDS = 0.5


def replay_in_processes(url: str, groups: Sequence[Sequence[str]], progress: Progress | None,
                        where: Callable[[], tuple[int, int]]) -> int:
    """Replay each group of (emptied) projections in its own process; return how many
    events were replayed. `where()` is (position of the slowest, head), for `progress`."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=len(groups), mp_context=context) as pool:
        futures = [pool.submit(replay_group, url, list(names)) for names in groups]
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=PROGRESS_SECONDS, return_when=FIRST_EXCEPTION)
            if any(future.exception() for future in done):
                break
            if progress is not None:
                progress(*where())
        return max(future.result() for future in futures)  # raises a process's error


def replay_group(url: str, names: list[str]) -> int:
    store = parse_store_url(url)
    app, db = open_application(store), Database(store)
    try:
        projections = [p for p in all_projections() if p.name in names]
        runner = ProjectionRunner(app, db, projections)
        runner.replaying = True  # the parent holds the rebuild lock for it
        return runner.replay_emptied()
    finally:
        db.close()
        app.close()
