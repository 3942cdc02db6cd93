"""A serve's wake-ups on PostgreSQL: LISTEN on its hosts' channels (adapters/work_table.py)
on a connection of its own, and wait for notices without a round trip to the server.

A wake-up only says sooner what the work table says anyway: one lost (the connection
dropped, a notice never sent) costs latency until the serve's sweep, never a step. After
the connection was lost, `wait` says so (`Told.missed`), so the serve sweeps at once.
"""

from __future__ import annotations

import contextlib
import os
import select
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from adapters.eventstore import StoreURL
from adapters.work_table import ALL, HOST_NOTICE, channel


@dataclass
class Told:
    """What the notices received say: instances with work (and the version it was
    written for), hosts whose connection to drop, whether events were recorded at all
    (heard while dispatching: the projections are to be written); `missed` after a lost
    connection."""

    work: dict[uuid.UUID, int] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)
    events: bool = False
    missed: bool = False
    notices: int = 0


class Wakeups:
    def __init__(self, store: StoreURL, hosts: frozenset[str] | None,
                 events_channel: str) -> None:
        self._store = store
        self._events_channel = events_channel  # eventsourcing's NOTIFY of every insert
        self._schema = store.pg_schema or "public"
        # A serve of every host hears every notice; a serve of some, its hosts' notices.
        self._every = hosts is None
        self._channels = {channel(self._schema, ALL)} if hosts is None else {
            channel(self._schema, host) for host in hosts}
        self._conn: psycopg.Connection[Any] | None = None
        # `nudge` ends a wait early (another thread has something for the waiter to do).
        self._nudges = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def listen_unrouted(self, on: bool) -> None:
        """Hear of work routed to no host too, and of every insert of events (while this
        serve holds the dispatch lease)."""
        unrouted = [] if self._every else [channel(self._schema, None)]  # heard on ALL
        for name in (*unrouted, self._events_channel):
            if on == (name in self._channels):
                continue
            (self._channels.add if on else self._channels.discard)(name)
            if self._conn is not None and not self._conn.closed:
                verb = "LISTEN" if on else "UNLISTEN"
                self._conn.execute(SQL(verb + " {0}").format(Identifier(name)))

    def wait(self, timeout: float) -> Told:
        """The notices that arrive within `timeout` seconds (returns on the first, with
        any that came with it); raises if the server can't be reached."""
        told = Told()
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.connect()
            told.missed = True  # whatever was sent meanwhile was not heard
            return told
        try:
            self._receive(told)
            # On the socket itself: psycopg's own wait wakes every 0.1 s, which was most
            # of an idle serve's CPU.
            ready = [] if told.notices else select.select(
                [self._conn.fileno(), self._nudges[0]], [], [], timeout)[0]
            if self._nudges[0] in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._nudges[0], 4096)
            if self._conn.fileno() in ready:
                self._receive(told)
        except psycopg.OperationalError:
            self.close()
            raise
        return told

    def nudge(self) -> None:
        """End the current or next `wait` now, with what it has."""
        with contextlib.suppress(BlockingIOError):  # full: a nudge is waiting already
            os.write(self._nudges[1], b".")

    def _receive(self, told: Told) -> None:
        """The notices received (and those the socket holds), without waiting."""
        assert self._conn is not None
        for notice in self._conn.notifies(timeout=0):
            if notice.channel == self._events_channel:
                told.events = True
                told.notices += 1
            else:
                self._note(told, notice.payload)

    @staticmethod
    def _note(told: Told, payload: str) -> None:
        told.notices += 1
        if payload.startswith(HOST_NOTICE):
            told.hosts.add(payload[len(HOST_NOTICE):])
            return
        instance_id, _, version = payload.partition(" ")
        try:
            key = uuid.UUID(instance_id)
            told.work[key] = max(int(version), told.work.get(key, 0))
        except ValueError:  # not ours: nothing to do
            told.notices -= 1

    def connect(self) -> None:
        self.close()
        # Bounded, with keepalives: a lost server must show, not hang the wait for ever.
        conn = psycopg.connect(self._store.psycopg_conninfo("wakeups"), autocommit=True,
                               keepalives=1, keepalives_idle=30, keepalives_interval=10,
                               keepalives_count=3)
        for name in sorted(self._channels):
            conn.execute(SQL("LISTEN {0}").format(Identifier(name)))
        self._conn = conn

    def close(self, final: bool = False) -> None:
        """The connection (made again by the next `wait`); if `final`, the nudges too."""
        if final:
            for fd in self._nudges:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                conn.close()
