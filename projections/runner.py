"""Catch the projections up with the event store, rebuild them, report their lag.

Each projection has its own tracking position. Projections at the same position share one
read and one decode of each batch, and write their rows and their new positions in one
transaction, under a row lock on their tracking rows: a crash mid-batch leaves rows and
positions together at the old position, and two processes can't both apply one batch.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.application import Application

from adapters.eventstore import SCHEMA_LOCK_KEY
from adapters.logs import get_logger
from adapters.poison import is_event_fault
from domain.errors import UsageError
from projections import quarantine
from projections.audit_log import AuditProjection
from projections.base import Change, Projection, topics_of
from projections.db import Database
from projections.folding import Folder
from projections.instances import InstancesProjection
from projections.reading import EventReader
from projections.schema import Schema, index_names
from projections.usage import HostUsageProjection

_log = get_logger("shelf.projections")
BATCH = 1000
# Held by a rebuild on PostgreSQL (an advisory lock, like SCHEMA_LOCK_KEY).
REBUILD_LOCK_KEY = SCHEMA_LOCK_KEY + 1
REBUILD_BATCH = 5000

Progress = Callable[[int, int], None]


def all_projections() -> list[Projection]:
    return [InstancesProjection(), HostUsageProjection(), AuditProjection()]


@dataclass(frozen=True)
class Status:
    name: str
    position: int
    head: int

    @property
    def lag(self) -> int:
        return self.head - self.position


class Failpoint(Protocol):
    """`projection:batch` is hit inside the batch transaction after the rows are written."""

    def hit(self, name: str) -> None: ...


class NoFailpoint:
    def hit(self, name: str) -> None:
        return None


class ProjectionRunner:
    def __init__(self, app: Application[uuid.UUID], db: Database,
                 projections: Sequence[Projection] | None = None,
                 failpoint: Failpoint | None = None) -> None:
        self.app, self.db = app, db
        self.projections = list(projections if projections is not None else all_projections())
        self.failpoint = failpoint or NoFailpoint()
        self._written: dict[str, int] = {}  # what this runner last wrote: its caches' basis
        self.replaying = False  # this runner is (part of) a rebuild: it holds the lock
        self.reader = EventReader(db, app.mapper)
        self.folder = Folder(app, self.reader)
        self.one_by_one = quarantine.OneByOne(db, self.folder.change,
                                              self.folder.drop_aggregate)
        self.schema = Schema(db, self.projections, self._rebuild_running_elsewhere,
                             lambda name: self._written.pop(name, None))

    # ---- schema and positions ---------------------------------------------------------

    def ensure_schema(self) -> None:
        """Tables, tracking rows and (unless a replay has deferred them) indexes."""
        self.schema.ensure()

    def positions(self) -> dict[str, int]:
        self.ensure_schema()
        rows = self.db.query("SELECT name, position FROM projection_tracking")
        found = {row["name"]: int(row["position"]) for row in rows}
        return {p.name: found.get(p.name, 0) for p in self.projections}

    def position(self) -> int:
        """Where every projection has got to at least."""
        return min(self.positions().values())

    def status(self) -> list[Status]:
        head = self.app.recorder.max_notification_id() or 0
        return [Status(name, position, head) for name, position in self.positions().items()]

    def quarantined(self) -> list[quarantine.Quarantined]:
        """The events the projections stepped past, oldest first (projections/quarantine)."""
        self.ensure_schema()
        return quarantine.listed(self.db)

    # ---- catching up ------------------------------------------------------------------

    def catch_up(self, batch: int = BATCH, progress: Progress | None = None) -> int:
        """Apply every event recorded since each projection's position; return how many
        events were applied (an event counts once however many projections took it).
        `progress(position, head)` is called after each batch written.

        It stops at the head of the store as it was after the first batch: events that
        keep arriving meanwhile are the next call's. (Chasing them made a busy `serve`
        write a transaction for every few new events, for as long as it stayed busy.)"""
        applied = 0
        head: int | None = None
        while True:
            positions = self.positions()
            start = min(positions.values())
            if head is not None and start >= head:
                return applied
            group = [p for p in self.projections if positions[p.name] == start]
            rows = self.reader.rows(start, batch)
            if not rows:
                return applied
            if not applied and self._rebuild_running_elsewhere():  # asked once, when needed
                return 0  # its processes are filling the tables; reads show them as they are
            if self._apply_batch(group, start, rows):
                applied += len(rows)
                head = head or self.app.recorder.max_notification_id() or 0
                if progress is not None:
                    progress(rows[-1][0], head)

    def _apply_batch(self, group: list[Projection], start: int,
                     rows: Sequence[tuple[Any, ...]]) -> bool:
        for projection in group:
            if self._written.get(projection.name) != start:  # caches from another basis
                projection.forget(empty=start == 0)
        end = rows[-1][0]
        skipped: list[tuple[Any, ...]] = []
        try:
            for change in self._changes(rows, topics_of(group), skipped):
                for projection in group:
                    projection.observe(change)
            self._commit(group, start, end, lambda: self._write_all(group, skipped))
        except BaseException as error:
            self._forget(group)
            if isinstance(error, _Moved):  # another process applied it: read again
                return False
            if not is_event_fault(error):
                raise
            return self._apply_one_by_one(group, start, rows)
        self._written.update((p.name, end) for p in group)
        return True

    def _write_all(self, group: list[Projection],
                   skipped: list[tuple[Any, ...]]) -> list[quarantine.Quarantined]:
        for projection in group:
            projection.write(self.db)
        return [entry for row in skipped for entry in self.one_by_one.apply(group, row)]

    def _commit(self, group: list[Projection], start: int, end: int,
                write: Callable[[], list[quarantine.Quarantined]]) -> None:
        """`write` the rows (it returns what it quarantined) and move the positions to
        `end`, in one transaction, unless another process moved them from `start`."""
        with self.db.transaction():
            if self._locked_positions(group) != {p.name: start for p in group}:
                raise _Moved
            quarantined = write()
            quarantine.record(self.db, quarantined)
            self.failpoint.hit("projection:batch")
            self.db.executemany("UPDATE projection_tracking SET position = ? WHERE name = ?",
                                [(end, p.name) for p in group])
        for entry in quarantined:
            _log.info("projection.quarantined", projection=entry.projection,
                      position=entry.position, aggregate_id=entry.aggregate_id,
                      version=entry.version, reason=entry.reason)

    def _forget(self, group: list[Projection]) -> None:
        for projection in group:
            projection.forget()
            self._written.pop(projection.name, None)

    def _apply_one_by_one(self, group: list[Projection], start: int,
                          rows: Sequence[tuple[Any, ...]]) -> bool:
        """The batch failed on some event's own fault: apply it again event by event, each
        projection's write in a savepoint, and quarantine what fails. (Only then: the
        common path writes a batch in one go.)"""
        for row in rows:  # the failed try folded these: fold them again from the store
            self.folder.drop_aggregate(row[1])

        def write() -> list[quarantine.Quarantined]:
            return [entry for row in rows for entry in self.one_by_one.apply(group, row)]

        end = rows[-1][0]
        try:
            self._commit(group, start, end, write)
        except BaseException as error:
            self._forget(group)
            if isinstance(error, _Moved):
                return False
            raise
        self._written.update((p.name, end) for p in group)
        return True

    def _locked_positions(self, group: Iterable[Projection]) -> dict[str, int]:
        lock = " FOR UPDATE" if self.db.backend == "postgres" else ""  # SQLite: BEGIN IMMEDIATE
        names = [p.name for p in group]
        rows = self.db.query(
            f"SELECT name, position FROM projection_tracking "
            f"WHERE name IN ({', '.join('?' * len(names))}){lock}", names)
        return {row["name"]: int(row["position"]) for row in rows}

    def _changes(self, rows: Sequence[tuple[Any, ...]], topics: tuple[str, ...],
                 skipped: list[tuple[Any, ...]]) -> Iterable[Change]:
        """The changes of the rows the projections fold (names, addresses, the host
        catalog, ...: none of them reads those); the rows of an unfoldable aggregate go
        to `skipped`."""
        unfoldable = self.one_by_one.unfoldable
        for row in rows:
            if row[3].startswith(topics):
                if unfoldable and row[1] in unfoldable:
                    skipped.append(row)
                else:
                    yield self.folder.change(row)

    # ---- rebuilding -------------------------------------------------------------------

    def rebuild(self, names: Sequence[str] = (), progress: Progress | None = None,
                jobs: int = 1) -> int:
        """Empty the named projections (all when none named) and replay every event.
        With `jobs` > 1 on PostgreSQL the projections are replayed in that many processes
        at once (each one's rows and position still move together, batch by batch)."""
        chosen = self._chosen(names)
        self.schema.ensure_tables()
        with self._rebuild_lock():
            self._empty(chosen)
            groups = split_by_cost(chosen, jobs if self.db.backend == "postgres" else 1)
            if len(groups) == 1:
                return self.replay_emptied(progress)
            from projections.parallel import replay_in_processes  # it imports this module

            def where() -> tuple[int, int]:
                return self.position(), self.app.recorder.max_notification_id() or 0

            with self._indexes_built_after():  # by the processes; this covers one that died
                return replay_in_processes(self.db.store.url, groups, progress, where)

    @contextmanager
    def _rebuild_lock(self) -> Iterator[None]:
        """While held, other processes' catch-ups leave the projections to this rebuild
        (PostgreSQL; released with the session if this process dies)."""
        if self.db.backend != "postgres":
            yield
            return
        self.db.execute("SELECT pg_advisory_lock(?)", (REBUILD_LOCK_KEY,))
        self.replaying = True
        try:
            yield
        finally:
            self.replaying = False
            with suppress(Exception):  # a broken session has released it already
                self.db.execute("SELECT pg_advisory_unlock(?)", (REBUILD_LOCK_KEY,))

    def _rebuild_running_elsewhere(self) -> bool:
        if self.db.backend != "postgres" or self.replaying:
            return False
        rows = self.db.query("SELECT pg_try_advisory_lock_shared(?) "
                             "AND pg_advisory_unlock_shared(?) AS free",
                             (REBUILD_LOCK_KEY, REBUILD_LOCK_KEY))
        return not rows[0]["free"]

    def _empty(self, chosen: Sequence[Projection]) -> None:
        """Empty the tables and, on PostgreSQL, drop their secondary indexes: the replay
        builds each index once at the end, which costs the server far less than keeping
        it up to date row by row."""
        postgres = self.db.backend == "postgres"
        with self.db.transaction():
            # Lock the tracking rows first, as a batch does: a batch being written now
            # commits before these statements run, so they see and remove its rows too.
            self._locked_positions(chosen)
            quarantine.forget(self.db, [p.name for p in chosen])
            for projection in chosen:
                for table in projection.tables:
                    self.db.execute(f"TRUNCATE {table}" if postgres else f"DELETE FROM {table}")
                for name in index_names(projection) if postgres else ():
                    self.db.execute(f"DROP INDEX IF EXISTS {name}")
            self.db.executemany("UPDATE projection_tracking SET position = 0 WHERE name = ?",
                                [(p.name,) for p in chosen])

    def replay_emptied(self, progress: Progress | None = None) -> int:
        """Replay every event into this runner's projections, just emptied; then build
        their indexes (also when the replay fails: reads must not lose them)."""
        for projection in self.projections:
            projection.forget(empty=True)
            self._written[projection.name] = 0
        self.folder.clear()
        self.one_by_one.unfoldable.clear()  # a fix may have made them readable
        with self._indexes_built_after(), self._commits_not_awaited(), _collector_paused():
            return self.catch_up(batch=REBUILD_BATCH, progress=progress)

    @contextmanager
    def _indexes_built_after(self) -> Iterator[None]:
        self.schema.defer_indexes()
        with _after(self.schema.build_indexes):
            yield

    @contextmanager
    def _commits_not_awaited(self) -> Iterator[None]:
        """A server crash may then lose the last batches' commits, rows and position
        together: the replay redoes them. Not waiting for each WAL flush is safe here."""
        if self.db.backend != "postgres":
            yield
            return
        self.db.execute("SET synchronous_commit TO off")
        with _after(lambda: self.db.execute("RESET synchronous_commit")):
            yield

    def _chosen(self, names: Sequence[str]) -> list[Projection]:
        known = {p.name: p for p in self.projections}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError(f"no such projection: {', '.join(unknown)} "
                             f"(there are: {', '.join(known)})")
        return [known[name] for name in names] if names else list(self.projections)


# How much of a replay's time each projection takes, roughly: splits the work evenly.
REPLAY_COST = {"audit": 3, "host_usage": 2, "instances": 1}


def split_by_cost(projections: Sequence[Projection], jobs: int) -> list[list[str]]:
    """The projections' names in at most `jobs` groups of about equal replay cost."""
    groups: list[list[str]] = [[] for _ in range(max(1, min(jobs, len(projections))))]
    costs = [0] * len(groups)
    for projection in sorted(projections, key=lambda p: -REPLAY_COST.get(p.name, 1)):
        lightest = costs.index(min(costs))
        groups[lightest].append(projection.name)
        costs[lightest] += REPLAY_COST.get(projection.name, 1)
    return groups


@contextmanager
def _after(clean_up: Callable[[], object]) -> Iterator[None]:
    """Run `clean_up` after the block; when the block failed, a failing clean-up must not
    hide the block's own error."""
    try:
        yield
    except BaseException:
        with suppress(Exception):
            clean_up()
        raise
    clean_up()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a replay. The replay keeps every aggregate it
    folds, so each full collection walks more objects than the last, and it makes next to
    no cycles: the collections were 5 to 10% of a replay, and freed almost nothing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Moved(Exception):
    """Another process moved a position while this batch was being prepared."""
