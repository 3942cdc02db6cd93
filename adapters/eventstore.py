"""The event store: eventsourcing's Application on SQLite (default) or PostgreSQL.

`open_store(url)` turns a store URL into an eventsourcing environment. The repository
wrapper translates the library's errors into the domain's (KeyError for "never
recorded", RecordConflict for "another writer took that version").
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlparse

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    Repository,
)
from eventsourcing.persistence import IntegrityError, Transcoder

from adapters import sqlite_writer
from adapters.folding import apply_event
from adapters.group_commit import GroupCommit
from adapters.logs import get_logger
from adapters.poison import fault_reason, is_event_fault
from adapters.transcoding import FastJSONTranscoder
from adapters.work_table import HostNotice, Work, row_for
from domain.errors import Unreadable, UsageError
from domain.host import Host
from domain.identity import Directory, LoginRecord, Revocations, User
from domain.instance import Instance
from domain.process_manager import acting_host
from domain.registry import AddressBlock
from domain.service import RecordConflict

DEFAULT_STORE = "sqlite:///./shelf.db"
# A host removed, or its name added again (perhaps with another URI): the serve holding
# its connection drops it, so the next step there connects to what the store says then.
HOST_REPLACED = frozenset({"Host.HostRemoved", "Host.HostAddedAgain"})
PG_CONNECT_TIMEOUT = 10  # seconds a PostgreSQL server may take to answer a new connection


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: which backend, and how to reach it."""

    url: str
    backend: str  # "sqlite" | "postgres"
    sqlite_path: Path | None = None
    pg_dbname: str = ""
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = ""
    pg_password: str = ""
    pg_schema: str = ""

    @property
    def redacted(self) -> str:
        return self.url.replace(f":{self.pg_password}@", ":***@") if self.pg_password else self.url

    def psycopg_conninfo(self, purpose: str = "") -> str:
        """`purpose` names the connection in pg_stat_activity (`application_name`
        shelf/PURPOSE), so an operator sees what each of a serve's few is for."""
        # A server that accepts the connection and never answers must not hang a command:
        # the same bound as the event store's own connections (POSTGRES_CONNECT_TIMEOUT).
        parts = {"dbname": self.pg_dbname, "host": self.pg_host, "port": str(self.pg_port),
                 "user": self.pg_user, "password": self.pg_password,
                 "connect_timeout": str(PG_CONNECT_TIMEOUT),
                 "application_name": connection_name(purpose) if purpose else ""}
        return " ".join(f"{key}={value}" for key, value in parts.items() if value)


def connection_name(purpose: str) -> str:
    """The `application_name` of a connection made for `purpose` (no spaces: conninfo)."""
    return f"shelf/{purpose}"


def parse_store_url(url: str) -> StoreURL:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///./shelf.db -> ./shelf.db ; sqlite:////abs/shelf.db -> /abs/shelf.db
        raw = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not raw:
            raise UsageError(f"bad store URL {url!r}: expected sqlite:///PATH")
        return StoreURL(url=url, backend="sqlite", sqlite_path=Path(raw))
    if parsed.scheme in ("postgresql", "postgres"):
        dbname = parsed.path.lstrip("/")
        if not dbname:
            raise UsageError(f"bad store URL {url!r}: expected postgresql://HOST[:PORT]/DBNAME")
        schema = parse_qs(parsed.query).get("schema", [""])[0]
        try:
            port = parsed.port or 5432
        except ValueError:
            raise UsageError(f"bad store URL {url!r}: the port must be a number") from None
        return StoreURL(
            url=url, backend="postgres", pg_dbname=dbname,
            pg_host=parsed.hostname or "127.0.0.1", pg_port=port,
            pg_user=unquote(parsed.username or "postgres"),
            pg_password=unquote(parsed.password or ""), pg_schema=schema,
        )
    raise UsageError(f"bad store URL {url!r}: use sqlite:///PATH or postgresql://HOST/DB")


# Loaded aggregates stay in memory; each later load reads only the events recorded since
# (eventsourcing's "fast-forward"), so it is never stale, and hands out a copy.
AGGREGATE_CACHE = {"AGGREGATE_CACHE_MAXSIZE": "10000", "AGGREGATE_CACHE_FASTFORWARD": "y",
                   "DEEPCOPY_FROM_AGGREGATE_CACHE": "y"}


def environment_for(store: StoreURL, pool: int | None = None) -> dict[str, str]:
    """`pool`: at most that many connections to PostgreSQL for the events (a serve's,
    application/worker.py `pool_size`), one kept while idle; None: eventsourcing's pool
    as every other command has it (4, and 4 more under load)."""
    if store.backend == "sqlite":
        assert store.sqlite_path is not None
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", **AGGREGATE_CACHE,
                "SQLITE_DBNAME": str(store.sqlite_path), "SQLITE_LOCK_TIMEOUT": "30"}
    env = {
        **AGGREGATE_CACHE,
        "PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": store.pg_dbname,
        "POSTGRES_HOST": store.pg_host, "POSTGRES_PORT": str(store.pg_port),
        "POSTGRES_USER": store.pg_user, "POSTGRES_PASSWORD": store.pg_password,
        "POSTGRES_POOL_SIZE": "1" if pool else "4",
        "POSTGRES_MAX_OVERFLOW": str(pool - 1) if pool else "4",
        # No ping before each use (a round trip per statement): a connection broken by a
        # server restart fails once, is dropped by the pool and the recorder retries
        # (tests/integration/test_database_loss.py restarts PostgreSQL under a worker).
        "POSTGRES_CONNECT_TIMEOUT": str(PG_CONNECT_TIMEOUT), "POSTGRES_PRE_PING": "n",
        # Writes the work rows and wake-ups of `serve` with the events (docs/fleet.md).
        "APPLICATION_RECORDER_TOPIC": "adapters.work_table:WorkRecorder",
    }
    if store.pg_schema:
        env["POSTGRES_SCHEMA"] = store.pg_schema
    return env


def pool_waits(app: Application[Any]) -> dict[str, int]:
    """How many times a thread found none of the event store's PostgreSQL connections
    free and waited, and for how long in all (ms); nothing on SQLite."""
    pool: Any = getattr(getattr(app.recorder, "datastore", None), "pool", None)
    if not hasattr(pool, "get_stats"):  # psycopg_pool's: SQLite's pool is eventsourcing's
        return {}
    stats = pool.get_stats()
    return {"pool_waits": stats.get("requests_queued", 0),
            "pool_wait_ms": stats.get("requests_wait_ms", 0)}


def project_events(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's `project_aggregate` without its per-event `isinstance` against a
    runtime-checkable Protocol, which costs about 50 us per event: most of the time of
    loading an aggregate. Every stored event here is one of our aggregates' events."""
    for event in events:
        aggregate = apply_event(event, aggregate)
    return aggregate


# Values that are never changed in place: a copy may share them.
_IMMUTABLE = frozenset({str, int, bool, float, type(None), uuid.UUID, datetime})


def copy_aggregate(aggregate: Any) -> Any:
    """A deep copy of an aggregate, several times faster than `copy.deepcopy` for ours:
    their attributes are mostly strings, numbers and times, which a copy can share, and
    dicts and lists of those (a host's claims), copied here without deepcopy's memo."""
    copied = object.__new__(type(aggregate))
    copied.__dict__.update({
        key: value if type(value) in _IMMUTABLE else _copy_value(value)
        for key, value in aggregate.__dict__.items()})
    return copied


def _copy_value(value: Any) -> Any:
    """A deep copy of a dict or list (anything else: deepcopy's). deepcopy took 68 µs for a
    host with 50 claims, and a claim or release loads its host: 13 µs here. No aggregate
    holds one mutable value in two places, which deepcopy's memo would keep shared."""
    kind = type(value)
    if kind is dict:
        copied = dict(value)
        for key, item in copied.items():
            if type(item) not in _IMMUTABLE:
                copied[key] = _copy_value(item)
        return copied
    if kind is list:
        return [item if type(item) in _IMMUTABLE else _copy_value(item) for item in value]
    return deepcopy(value)


_GET_LOCKS = 64  # striped by aggregate id: loads of different aggregates don't wait


class ShelfRepository(Repository[uuid.UUID]):
    def get(self, aggregate_id: uuid.UUID, *, version: int | None = None,
            projector_func: Any = project_events, deepcopy_from_cache: bool = True,
            **options: Any) -> Any:
        if version is not None or not self.cache:
            return super().get(aggregate_id, version=version, projector_func=projector_func,
                               **options)
        # The cached object is fast-forwarded in place; copying it while another thread
        # does so could copy half an update (or fail on a dict changing size). One lock
        # per stripe of ids covers both.
        with self._get_locks[hash(aggregate_id) % _GET_LOCKS]:
            aggregate = super().get(aggregate_id, projector_func=projector_func,
                                    deepcopy_from_cache=False, **options)
            if deepcopy_from_cache and self.deepcopy_from_cache:
                return copy_aggregate(aggregate)  # its user gets a copy
            return aggregate

    _get_locks: list[threading.Lock]  # set by ShelfApplication.construct_repository


class ShelfApplication(Application[uuid.UUID]):
    """The event store of every aggregate. Aggregates are snapshotted every 50 events."""

    name = "shelf"
    # An instance lives for years of requests: loading one reads at most 50 events.
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        Host: 50, AddressBlock: 50, Instance: 50,
        Directory: 50, User: 50, Revocations: 50, LoginRecord: 50}

    def _take_snapshots(self, processing_event: Any) -> None:
        """After the events are committed. A snapshot only speeds up loading: failing to
        take one must not turn a recorded request or step into a reported failure."""
        try:
            super()._take_snapshots(processing_event)
        except Exception as error:
            get_logger("shelf.store").warning("snapshot.failed", error=str(error))

    def snapshots_due(self, saved: ProcessingEvent[uuid.UUID]) -> bool:
        """Whether a saved aggregate's new version is on its snapshot interval."""
        for event in saved.events:
            interval = self.snapshotting_intervals.get(
                type(saved.aggregates.get(event.originator_id)))
            if interval and event.originator_version % interval == 0:
                return True
        return False

    def take_due_snapshots(self, saved: ProcessingEvent[uuid.UUID]) -> None:
        """Snapshot the saved aggregates whose new version is on an interval."""
        self._take_snapshots(saved)

    def construct_repository(self) -> Repository[uuid.UUID]:
        """eventsourcing's repository, with the faster projector (`project_events`)."""
        repository = super().construct_repository()
        repository.__class__ = ShelfRepository  # same settings and cache; only `get` differs
        assert isinstance(repository, ShelfRepository)
        repository._get_locks = [threading.Lock() for _ in range(_GET_LOCKS)]
        return repository

    def construct_transcoder(self) -> Transcoder:
        """The same JSON as eventsourcing's default, decoded faster (adapters/transcoding)."""
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder


class EventStoreRepository:
    """The domain's Repository port over the eventsourcing Application. Saves from
    concurrent threads are written together (adapters/group_commit.py)."""

    def __init__(self, app: ShelfApplication, store: StoreURL) -> None:
        self.app = app
        self.commits = GroupCommit(self._write, conflict=IntegrityError)
        self._writer = local_writer(store)
        # PostgreSQL: each save writes its instances' work rows (docs/fleet.md).
        self._work = store.backend == "postgres"

    def get(self, aggregate_id: uuid.UUID) -> Any:
        try:
            return self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise KeyError(aggregate_id) from None
        except Exception as error:
            if is_event_fault(error):  # one of its events: loading it again won't help
                raise Unreadable(aggregate_id, fault_reason(error)) from error
            raise

    def save(self, *aggregates: Any) -> None:
        """What `Application.save` does, with the events written by the group commit.
        (Its own collecting checks each object against two runtime Protocols, slowly.)"""
        processing: ProcessingEvent[uuid.UUID] = ProcessingEvent()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        # Encoded here, in the saving thread: the group's writer only inserts them.
        stored = [self.app.mapper.to_stored_event(event) for event in processing.events]
        try:
            self.commits.save(stored, self._work_of(processing) if self._work else None)
        except IntegrityError as error:
            raise RecordConflict(str(error)) from None
        if self.app.snapshots_due(processing):
            with self._writer:  # a write too: it takes turns with the others
                self.app.take_due_snapshots(processing)

    def _write(self, stored: list[Any], work: list[Any]) -> None:
        with self._writer:
            if work:
                self.app.recorder.insert_events(stored, work=work)
            else:
                self.app.recorder.insert_events(stored)

    @staticmethod
    def _work_of(saved: ProcessingEvent[uuid.UUID]) -> list[Work]:
        """What the saved instances have left to do, and the hosts to forget."""
        work: list[Work] = []
        for aggregate in saved.aggregates.values():
            if isinstance(aggregate, Instance):
                work.append(row_for(aggregate, acting_host))
        for event in saved.events:
            if type(event).__qualname__ in HOST_REPLACED:
                host = saved.aggregates.get(event.originator_id)
                if isinstance(host, Host):
                    work.append(HostNotice(host.name))
        return work


def local_writer(store: StoreURL) -> AbstractContextManager[Any]:
    """Held around every write transaction on `store` (adapters/sqlite_writer.py)."""
    return sqlite_writer.local_writer(store.backend, store.sqlite_path)


# PostgreSQL's `CREATE ... IF NOT EXISTS` fails with "tuple concurrently updated" when two
# processes run it at once (serve starting while a CLI command does): serialize all DDL.
SCHEMA_LOCK_KEY = 0x5E1F


def open_application(store: StoreURL, pool: int | None = None) -> ShelfApplication:
    if store.backend == "sqlite" and store.sqlite_path is not None:
        store.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        return ShelfApplication(env=environment_for(store))
    import psycopg  # here: a SQLite store never pays for importing it

    with psycopg.connect(store.psycopg_conninfo("schema"), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        try:
            return ShelfApplication(env=environment_for(store, pool))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_KEY,))
