"""`shelf serve`: learn of work and let the process manager carry out requests.

On start it catches the read models up and drives every instance whose task is in
flight (its own, with `--host`): an operation half-finished by a crash continues from its
last recorded step. Then it drives each instance it is told of (PostgreSQL: a notice per
host, application/push_feed.py) or that a new event touched (SQLite: the notification
log, application/poll_feed.py), sweeps its work every few seconds in case a notice was
lost, and checks the shelved-offload timer. Several instances are driven at once; one
instance is only ever driven by one thread of this process at a time.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from adapters.eventstore import pool_waits
from adapters.leases import InstanceLeases
from adapters.serving import ServingLeases, projections_key
from adapters.wakeups import Told
from application.bootstrap import Context
from application.poll_feed import INSTANCE_TOPIC, POLL_SECONDS, PollFeed
from application.push_feed import PushFeed, push_feed
from application.step_recording import StepRecorder
from domain.errors import Unreadable
from domain.ports import Failpoints
from domain.process_manager import ProcessManager, Settings

TIMER_SECONDS = 1.0
BACKOFF_START, BACKOFF_MAX = 0.5, 30.0
# An instance another serve holds is tried again after this, doubling up to the sweep's
# interval: with `serve --host`, a claim made by one serve is spawned by another, which
# hears of it while the first may still hold the instance for a moment.
HELD_RETRY_START = POLL_SECONDS
SWEEP_SECONDS = 5.0
# How often a busy worker writes the projections. Every read command catches them up
# itself first, so this only bounds how far behind they are; writing them after every
# poll made their transactions fight the steps' own for SQLite's single write lock.
PROJECTIONS_SECONDS = 0.5
# Push: the dispatching serve alone writes them (it hears of every insert), and once more
# when no event has come for this long: not every serve, every time it drove something.
PROJECTIONS_QUIET_SECONDS = 0.05
# How long a thread may hold the GIL while others wait (Python's default is 5 ms). The
# thread writing a group commit gives it up for every database call and must get it back
# each time; behind busy drive threads that wait is what made a 0.4 ms commit take 2 ms.
SWITCH_INTERVAL = 0.0005
# A serve's connections to PostgreSQL for the events (eventsourcing's pool), at most: its
# drive threads and its loop each use one at a time, for a read or for the group commit
# that writes for all, and a thread finding none free waits its turn (FIFO, bounded by
# the store's connect timeout). With its leases' session and its LISTEN connection (and
# the projections' on the dispatching serve), a serve holds at most 5 (6), so a few
# hundred fit one PostgreSQL server; an idle serve keeps one (work_table.py).
POOL_MAX = 3


def pool_size(threads: int) -> int:
    """The most connections to the events a serve of `threads` drive threads opens."""
    return min(threads + 1, POOL_MAX)


class Worker:
    def __init__(
        self, ctx: Context, settings: Settings, failpoints: Failpoints | None = None,
        threads: int = 4,
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        # One PostgreSQL session for the instances' leases and the serving leases.
        self.leases = InstanceLeases(ctx.store)
        self.serving = ServingLeases(ctx.store, settings.hosts, self.leases)
        # Asked whether an event is one this process recorded itself (see _to_drive).
        self.records = StepRecorder(ctx.repo)
        # A serve of every host performs any host's steps itself: it asks nobody.
        self.pm: ProcessManager = ctx.process_manager(
            settings, failpoints, served=self.is_served if settings.hosts else None,
            records=self.records)
        self.log = structlog.get_logger("shelf.serve")
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="drive")
        self.running: dict[uuid.UUID, Future[None]] = {}
        self.again: set[uuid.UUID] = set()  # touched again while being driven
        # Instances whose events can't be read: skipped until this serve restarts.
        self.unreadable: set[uuid.UUID] = set()
        # held by another serve: (when to try again, the wait after that)
        self.held_retries: dict[uuid.UUID, tuple[float, float]] = {}
        self.lock = threading.Lock()
        # How work reaches this serve: told (PostgreSQL) or polled for (SQLite).
        self.feed: PushFeed | PollFeed = (
            push_feed(ctx, settings.hosts, self.serving) or PollFeed(ctx, settings.hosts))
        self.dispatching = False  # push: told of work routed to no host (push_feed.py)
        # push, dispatching: events recorded (by any serve) not yet in the projections
        self.unprojected = False
        self.drives = 0  # instances driven (loaded, folded): the fleet's tests count them
        self.last_timer_check = 0.0
        self.last_sweep = 0.0
        self.last_projection = -math.inf  # due at once, whatever time.monotonic() reads

    # ---- start-up: resume what a crash left half-done ---------------------------------

    def start(self) -> None:
        self.hold_serving_leases()
        self.ctx.projector.catch_up()
        self.feed.start()
        self.sweep_in_flight(force=True)
        self.check_offload_timer(force=True)

    def sweep_in_flight(self, force: bool = False) -> None:
        """Every instance with a task in flight gets driven: after a crash, and now and then
        in case a drive stopped early (say, the database went away mid-step)."""
        now = time.monotonic()
        if not force and now - self.last_sweep < SWEEP_SECONDS:
            return
        self.last_sweep = now
        self.hold_serving_leases()
        if isinstance(self.feed, PushFeed):
            self.dispatching = self.feed.dispatching()
            mine = self.feed.swept()
            if force and mine:
                self.log.info("serve.resuming", instances=len(mine))
            self.submit(mine)
            if not self.dispatching:
                # What follows reads everyone's, and the projections are written by the
                # dispatching serve: their connection (made at start) is not kept open.
                self.ctx.db.close()
                return
        in_flight = [uuid.UUID(row["id"]) for row in self.ctx.db.query(
            "SELECT id FROM instances WHERE task_state IS NOT NULL")]
        if isinstance(self.feed, PushFeed):  # rows missing: written again, their serves told
            self.feed.repair(in_flight)
        else:
            if in_flight and force:
                self.log.info("serve.resuming", instances=len(in_flight))
            self.submit(in_flight)
        # One with an event the projection quarantined has a stale row, or none: its own
        # events say whether it has a task in flight.
        self.submit(uuid.UUID(entry.aggregate_id) for entry in self.ctx.projector.quarantined()
                    if entry.topic.startswith(INSTANCE_TOPIC))

    def hold_serving_leases(self) -> None:
        """Say which hosts this serve performs the steps on, for as long as it runs (taken
        again should the database session end)."""
        for host in self.serving.refresh():
            self.log.warning("serve.host_served_elsewhere", host=host)

    def is_served(self, host: str) -> bool:
        """`serve --host`: whether some serve performs the steps on `host`: this one, one
        of every host, or one of that host."""
        return self.serving.served(host)

    # ---- one pass ---------------------------------------------------------------------

    def take_turn(self, stop: threading.Event) -> int:
        """Wait for work (at most until something is due), drive what this serve is told
        of or polled, and what is due; return how many notices or events came."""
        told = self.feed.wait(self._until_due(), stop)
        self.unprojected = self.unprojected or told.events
        self._forget_replaced_hosts(told)
        self.submit([instance_id for instance_id, version in told.work.items()
                     if not self.records.recorded_here(instance_id, version)])
        self.check_offload_timer()
        self.sweep_in_flight(force=told.missed)  # a lost connection: the notices too
        self.retry_held_elsewhere()
        return told.notices

    def _until_due(self) -> float:
        """Seconds until the sweep, a held instance's retry or the projections are due."""
        now = time.monotonic()
        due = [self.last_sweep + SWEEP_SECONDS]
        with self.lock:
            due += [when for when, _ in self.held_retries.values()]
        if self.unprojected:  # every PROJECTIONS_SECONDS, and once events stop coming
            due += [self.last_projection + PROJECTIONS_SECONDS, now + PROJECTIONS_QUIET_SECONDS]
        return max(0.0, min(due) - now)

    def _forget_replaced_hosts(self, told: Told) -> None:
        """A host removed, or its name added again (perhaps with another URI): its open
        connection is dropped, so the next step there connects to what the store says."""
        forget = getattr(self.ctx.hosts, "forget", None)
        for name in sorted(told.hosts):
            if forget is not None:
                self.log.info("serve.host_connection_dropped", host=name)
                forget(name)

    def check_offload_timer(self, force: bool = False) -> None:
        """The deadline is derived from `shelved_at` in the store, so it survives restarts."""
        if self.settings.shelved_offload_time < 0:
            return
        if isinstance(self.feed, PushFeed) and not self.dispatching:
            return  # the dispatching serve's task: it records the offload requests
        # At once (0): a shelve offloads in its own transaction; the timer only catches
        # what was shelved before, and on PostgreSQL looks at the sweep's pace.
        every = TIMER_SECONDS
        if self.settings.shelved_offload_time == 0 and isinstance(self.feed, PushFeed):
            every = SWEEP_SECONDS
        now = time.monotonic()
        if not force and now - self.last_timer_check < every:
            return
        self.last_timer_check = now
        rows = self.ctx.db.query(
            "SELECT id FROM instances WHERE vm_state = 'shelved' AND task_state IS NULL"
        )
        self.submit(uuid.UUID(row["id"]) for row in rows)

    def submit(self, instance_ids: Iterable[uuid.UUID]) -> None:
        with self.lock:
            for instance_id in dict.fromkeys(instance_ids):
                if instance_id in self.unreadable:
                    continue
                if instance_id in self.running:
                    self.again.add(instance_id)
                    continue
                self.running[instance_id] = self.pool.submit(self._drive, instance_id)

    def retry_held_elsewhere(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [key for key, (when, _) in self.held_retries.items() if when <= now]
            for key in due:  # tried now: due again only if found held again (_note_held)
                self.held_retries[key] = (float("inf"), self.held_retries[key][1])
        self.submit(due)

    def _note_held(self, instance_id: uuid.UUID, held: bool) -> None:
        with self.lock:
            if held:
                self.held_retries.pop(instance_id, None)
                return
            wait = self.held_retries.get(instance_id, (0.0, HELD_RETRY_START))[1]
            self.held_retries[instance_id] = (
                time.monotonic() + wait, min(wait * 2, SWEEP_SECONDS))
        self.feed.nudge()  # its wait was reckoned without this retry

    def _drive(self, instance_id: uuid.UUID) -> None:
        while True:
            try:
                with self.leases.hold(instance_id) as held:
                    self._note_held(instance_id, held)
                    if held:  # else another serve drives it: tried again soon
                        self.log.debug("drive.start", instance_id=str(instance_id))
                        with self.lock:
                            self.drives += 1
                        self.pm.drive(instance_id)
            except Unreadable as error:
                self._set_aside(instance_id, error)
            except Exception:  # one instance's bug must not stop the others
                self.log.exception("drive.crashed", instance_id=str(instance_id))
            with self.lock:
                if instance_id not in self.again:
                    del self.running[instance_id]
                    return
                self.again.discard(instance_id)

    def _set_aside(self, instance_id: uuid.UUID, error: Unreadable) -> None:
        """An instance whose own events can't be read is skipped from now on, with one
        logged error (driving it again would fail the same way); the rest go on."""
        if error.aggregate_id != instance_id:  # another aggregate's: not this one's fault
            self.log.error("drive.failed", instance_id=str(instance_id), error=str(error))
            return
        with self.lock:
            self.unreadable.add(instance_id)
        self.log.error("drive.unreadable", instance_id=str(instance_id), error=error.reason)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.running)

    # ---- loops ------------------------------------------------------------------------

    def run(self, stop: threading.Event, once: bool = False) -> None:
        interval = sys.getswitchinterval()  # process-wide: put back when the worker stops
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            self._serve(stop, once)
        finally:
            sys.setswitchinterval(interval)

    def _serve(self, stop: threading.Event, once: bool) -> None:
        self._until_started(stop)
        backoff = BACKOFF_START
        while not stop.is_set():
            try:
                read = self.take_turn(stop)
                busy = self.busy()
                if not isinstance(self.feed, PushFeed):
                    self.catch_up_projections(idle=not read and not busy)
                elif self.unprojected:  # push: events came, and this serve dispatches
                    self.catch_up_projections(idle=not read)
            except Exception as error:  # the database went away: wait for it, lose nothing
                self.log.error("serve.store_unavailable", error=str(error), retry_in=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_START
            if once and not read and not self.busy():
                break
        self.shutdown()

    def catch_up_projections(self, idle: bool) -> None:
        now = time.monotonic()
        if idle or now - self.last_projection >= PROJECTIONS_SECONDS:
            # One serve at a time: another finding it taken skips its turn, rather than
            # fold the same events only to find the first has written them already.
            with self.leases.hold(projections_key(self.ctx.store)) as held:
                if held:
                    self.ctx.projector.catch_up()
                    # Push: written once idle (taken: again soon, see _until_due).
                    self.unprojected = self.unprojected and not idle
            self.last_projection = now

    def _until_started(self, stop: threading.Event) -> None:
        backoff = BACKOFF_START
        while not stop.is_set():
            try:
                self.start()
                return
            except Exception as error:
                self.log.error("serve.store_unavailable", error=str(error), retry_in=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def shutdown(self) -> None:
        try:
            self.pool.shutdown(wait=True)
            self.serving.close()
            self.leases.close()  # the session, and any lease still in it
            self.feed.close()
        finally:  # the bench and the fleet's tests read their counts from this line
            commits = self.ctx.repo.commits
            self.log.info("serve.stopped", transactions=commits.transactions,
                          saves=commits.saves, split=commits.split, drives=self.drives,
                          **pool_waits(self.ctx.app))
