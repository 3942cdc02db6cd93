"""The work table and its wake-ups (PostgreSQL): which instance has a step to take, and
which `serve` is told of it (docs/fleet.md).

Every save of an instance writes, in the transaction of its events, one row of
`shelf_work` while it has a step to take (removed once it has none), and a
`pg_notify` on the channel of the host whose serve is to take that step. So a serve
learns of its own work only, by a push, and can't be told of work the events don't hold
(a rolled-back save notifies nobody). The table is derived from the events: any row can
be written again from the instance's events (`rows_for`), and the sweep does so for an
instance in flight that has none.

A row's `host` is the host the next step acts on (`acting_host`), NULL for a step any
serve may take (a claim, a finish); its `route` is the host whose serve is told of it:
the acting host, else the host the instance is on, claimed or asked for, so a serve
that drives an instance goes on with its closing steps itself. A row with no route (the
claim of an offloaded instance) goes to the serve that holds the dispatch lease
(adapters/serving.py). Every notice goes to the ALL channel too, for a serve of every
host.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from domain.instance import Instance

WORK_TABLE = "shelf_work"
POOL_NAME = "shelf/events"  # adapters/eventstore.py `connection_name`, of the event store's
POOL_IDLE_SECONDS = 60.0
ANY, ALL = "*any", "*all"  # the channels of unrouted work, and of every notice
HOST_NOTICE = "host "  # a notice's payload: "host NAME", its connection to be dropped


@dataclass(frozen=True)
class WorkRow:
    """What one save leaves an instance to do: `busy` False removes its row."""

    instance_id: uuid.UUID
    version: int
    busy: bool
    host: str | None = None
    route: str | None = None

    @property
    def payload(self) -> str:
        return f"{self.instance_id} {self.version}"


@dataclass(frozen=True)
class HostNotice:
    """A host removed or added again: the serve that holds its connection drops it."""

    host: str

    @property
    def payload(self) -> str:
        return HOST_NOTICE + self.host


Work = WorkRow | HostNotice


def row_for(instance: Instance, acting_host: Any) -> WorkRow:
    """The row an instance's current state makes (`acting_host` from the domain)."""
    step = instance.next_step()
    if step is None:
        return WorkRow(instance.id, instance.version, busy=False)
    host = acting_host(instance, step)
    route = host or instance.host or instance.claim_host or instance.target_host
    return WorkRow(instance.id, instance.version, True, host, route)


def channel(schema: str, route: str | None) -> str:
    """The LISTEN/NOTIFY channel of a host's serve (None: of unrouted work). NOTIFY is per
    database: the schema keeps two stores in one database apart."""
    digest = hashlib.sha1(f"{schema}/{route or ANY}".encode()).hexdigest()[:24]
    return f"shelf_work_{digest}"


def notices(schema: str, work: Iterable[Work]) -> tuple[list[str], list[str]]:
    """(channels, payloads) of the notices `work` sends: each to its route and to ALL."""
    channels: list[str] = []
    payloads: list[str] = []
    every = channel(schema, ALL)
    for item in work:
        if isinstance(item, WorkRow) and not item.busy:
            continue
        route = item.host if isinstance(item, HostNotice) else item.route
        channels += [channel(schema, route), every]
        payloads += [item.payload] * 2
    return channels, payloads


class WorkRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL recorder, which writes the work rows and their notices
    in the transaction of the events (`insert_events(events, work=...)`)."""

    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        # Before the pool's first connection, which eventsourcing's __init__ makes (it
        # offers no setting for either): its connections named in pg_stat_activity, and
        # after each POOL_IDLE_SECONDS in which one was never needed, one closed
        # (psycopg_pool's default: 10 minutes), down to the pool's minimum, so an idle
        # serve keeps one.
        datastore.pool.kwargs["application_name"] = POOL_NAME
        datastore.pool.max_idle = POOL_IDLE_SECONDS
        super().__init__(datastore, events_table_name=events_table_name)
        table = Identifier(self.datastore.schema, WORK_TABLE)
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {0} (instance_id uuid PRIMARY KEY, "
                "version bigint NOT NULL, host text, route text)").format(table),
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (route)").format(
                Identifier(f"{WORK_TABLE}_route"), table),
        ]
        self.upsert_statement = SQL(
            "WITH items AS (SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::bool[], "
            "%s::text[], %s::text[]) AS t(id, version, busy, host, route)), "
            "gone AS (DELETE FROM {0} w USING items i WHERE w.instance_id = i.id "
            "AND NOT i.busy AND w.version <= i.version) "
            "INSERT INTO {0} (instance_id, version, host, route) "
            "SELECT id, version, host, route FROM items WHERE busy "
            "ON CONFLICT (instance_id) DO UPDATE SET version = EXCLUDED.version, "
            "host = EXCLUDED.host, route = EXCLUDED.route "
            "WHERE {0}.version < EXCLUDED.version").format(table)

    def _insert_stored_events(self, curs: Any, stored_events: Sequence[StoredEvent],
                              **kwargs: Any) -> None:
        """After the events (and so under their table lock: the rows of concurrent saves
        are written in the events' order, and never wait for each other in a cycle)."""
        work: Sequence[Work] = kwargs.pop("work", ())
        super()._insert_stored_events(curs, stored_events, **kwargs)
        if work:  # a cursor of its own: the events' cursor returns their ids next
            with curs.connection.cursor() as own:
                self.write_work(own, work)

    def write_work(self, curs: Any, work: Sequence[Work]) -> None:
        rows = [item for item in work if isinstance(item, WorkRow)]
        if rows:
            curs.execute(self.upsert_statement, (
                [row.instance_id for row in rows], [row.version for row in rows],
                [row.busy for row in rows], [row.host for row in rows],
                [row.route for row in rows]), prepare=True)
        channels, payloads = notices(self.datastore.schema, work)
        if channels:
            curs.execute("SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) "
                         "AS t(c, p)", (channels, payloads), prepare=True)

    def repair(self, rows: Sequence[WorkRow]) -> None:
        """Write rows made again from the events (the sweep's repair), with their
        notices, outside any save: a row of a later version is kept."""
        with self.datastore.transaction(commit=True) as curs:
            self.write_work(curs, rows)

    def work_for(self, routes: Iterable[str] | None, unrouted: bool) -> list[uuid.UUID]:
        """The instances with work routed to one of `routes` (None: to any host), and,
        if `unrouted`, those with work routed to none."""
        table = Identifier(self.datastore.schema, WORK_TABLE)
        if routes is None:
            query, params = SQL("SELECT instance_id FROM {0}").format(table), ()
        else:
            query = SQL("SELECT instance_id FROM {0} WHERE route = ANY(%s)"
                        + (" OR route IS NULL" if unrouted else "")).format(table)
            params = (sorted(routes),)  # type: ignore[assignment]
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(query, params, prepare=True)
            return [row["instance_id"] for row in curs.fetchall()]

    def missing(self, in_flight: Iterable[uuid.UUID]) -> list[uuid.UUID]:
        """Which of `in_flight` have no row."""
        table = Identifier(self.datastore.schema, WORK_TABLE)
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT id FROM unnest(%s::uuid[]) AS t(id) WHERE NOT EXISTS "
                             "(SELECT 1 FROM {0} WHERE instance_id = id)").format(table),
                         (list(in_flight),))
            return [row["id"] for row in curs.fetchall()]
