"""How a `serve` on PostgreSQL learns of its work: told, not polling (docs/fleet.md).

Each save writes its instances' rows of the work table and notifies the serve of the host
each is routed to, in the transaction of its events (adapters/work_table.py). A serve
LISTENs on its hosts' channels (adapters/wakeups.py), and on the channel of work routed to
no host while it holds the dispatch lease (adapters/serving.py). Its sweep, every few
seconds, reads its rows of the work table: a notice lost costs that long, never a step.
The dispatching serve also repairs the table: an instance in flight with no row (its
events written by something other than the repository) gets its row written again from
its events, and with it the notice to its serve.

A SQLite store (one machine, usually one serve) has neither: its serve polls the
notification log as before.
"""

from __future__ import annotations

import threading
import uuid

from adapters.serving import ServingLeases
from adapters.wakeups import Told, Wakeups
from adapters.work_table import WorkRecorder, row_for
from application.bootstrap import Context
from domain.errors import Unreadable
from domain.instance import Instance
from domain.process_manager import acting_host
from domain.service import find

WAIT_SECONDS = 0.5  # the longest wait for a notice: how soon a stop is noticed


class PushFeed:
    def __init__(self, ctx: Context, hosts: frozenset[str] | None,
                 serving: ServingLeases) -> None:
        recorder = ctx.app.recorder
        assert isinstance(recorder, WorkRecorder), "a PostgreSQL store's recorder"
        self.ctx, self.recorder, self.hosts, self.serving = ctx, recorder, hosts, serving
        self.wakeups = Wakeups(ctx.store, hosts, recorder.channel_name)

    @property
    def every_host(self) -> bool:
        return self.hosts is None

    def start(self) -> None:
        """LISTEN from now on: the start's sweep, which follows, finds what came before."""
        self.wakeups.connect()

    def wait(self, timeout: float, stop: threading.Event) -> Told:
        """The notices within `timeout` (`stop` is looked at after, within WAIT_SECONDS)."""
        return self.wakeups.wait(min(timeout, WAIT_SECONDS))

    def nudge(self) -> None:
        """The wait ends now: a drive thread has a retry for the loop to schedule."""
        self.wakeups.nudge()

    def dispatching(self) -> bool:
        """Whether this serve is told of work routed to no host (a serve of every host
        hears all work anyway)."""
        dispatching = self.every_host or self.serving.dispatching()
        self.wakeups.listen_unrouted(dispatching)
        return dispatching

    def swept(self) -> list[uuid.UUID]:
        """The instances whose work is this serve's, read from the work table."""
        return self.recorder.work_for(self.hosts, unrouted=self.dispatching())

    def repair(self, in_flight: list[uuid.UUID]) -> list[uuid.UUID]:
        """Of `in_flight` (read from the projection), those without a row get theirs
        written again from their events, and their serves told; returns them."""
        missing = self.recorder.missing(in_flight)
        rows = []
        for instance_id in missing:
            try:
                instance = find(self.ctx.repo, instance_id, Instance)
            except Unreadable:
                continue  # the drive that finds it so sets it aside
            if instance is not None:
                rows.append(row_for(instance, acting_host))
        if rows:
            self.recorder.repair(rows)
        return [row.instance_id for row in rows if row.busy]

    def close(self) -> None:
        self.wakeups.close(final=True)


def push_feed(ctx: Context, hosts: frozenset[str] | None, serving: ServingLeases
              ) -> PushFeed | None:
    """The feed of a PostgreSQL store; None for SQLite (its serve polls)."""
    if ctx.store.backend != "postgres":
        return None
    return PushFeed(ctx, hosts, serving)

