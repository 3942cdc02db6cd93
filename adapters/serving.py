"""Which hosts some `serve` performs the steps on: each `serve` holds a lease for as long as
it runs, one per host it owns (`serve --host`), or one for every host (no `--host`).
Placement asks whether a host's lease, or the every-host lease, is held, as Nova's
scheduler asks whether a host's compute service is up (adapters/leases.py holds them)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from adapters.eventstore import StoreURL
from adapters.leases import GRANTED_ADVISORY_LOCKS, InstanceLeases, advisory_halves
from adapters.logs import get_logger

log = get_logger()

_NAMESPACE = uuid.UUID("5e1f5e4e-0000-4000-8000-000000000001")


def serving_key(store: StoreURL, host: str | None) -> uuid.UUID:
    """The lease a serve holds while it performs the steps on `host` (None: on every
    host). Per store: PostgreSQL's advisory locks are shared by a database's schemas."""
    return uuid.uuid5(_NAMESPACE, f"serving/{store.pg_schema or ''}/{host or '*'}")


def serving_keys(store: StoreURL, host: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The leases either of which, held, means `host` is served: a serve of every host's,
    or a serve of that host's (looked at together: one query)."""
    return serving_key(store, None), serving_key(store, host)


def dispatch_key(store: StoreURL) -> uuid.UUID:
    """The lease of the serve that is told of work routed to no host (docs/fleet.md)."""
    return uuid.uuid5(_NAMESPACE, f"dispatch/{store.pg_schema or ''}")


def projections_key(store: StoreURL) -> uuid.UUID:
    """The lease a serve holds while it writes the projections."""
    return uuid.uuid5(_NAMESPACE, f"projections/{store.pg_schema or ''}")


class ServingLeases:
    """A serve's serving leases, held until `close`, through the `InstanceLeases` it
    drives its instances with (one PostgreSQL session for all of a serve's leases), or
    one of their own if none is given."""

    def __init__(self, store: StoreURL, hosts: frozenset[str] | None,
                 leases: InstanceLeases | None = None) -> None:
        self._store = store
        self._own_leases = leases is None
        self._leases = leases or InstanceLeases(store)
        self._hosts: frozenset[str | None] = frozenset(hosts) if hosts else frozenset({None})
        self._holding: dict[str | None, ExitStack] = {}
        self._dispatch: ExitStack | None = None
        self._session: int | None = None  # the session they were taken in

    def refresh(self) -> list[str]:
        """Take every lease not held yet (at start, and again after the database session
        was lost with them); return the owned hosts another serve holds too."""
        if self._session is not None and self._leases.lost_since(self._session):
            self.release_all()  # they ended with it
        self._session = self._leases.session()
        elsewhere = []
        for host in self._hosts - set(self._holding):
            stack = ExitStack()
            if stack.enter_context(self._leases.hold(serving_key(self._store, host))):
                self._holding[host] = stack
            else:
                stack.close()
                if host is not None:  # two serves of every host are a normal set-up
                    elsewhere.append(host)
        return sorted(elsewhere)

    def served(self, host: str) -> bool:
        """Whether some serve performs the steps on `host`: this one (its host, or every
        host), or another holding that host's lease or the every-host one (one look)."""
        if host in self._hosts or None in self._hosts:
            return True
        return self._leases.held_elsewhere(*serving_keys(self._store, host))

    def dispatching(self) -> bool:
        """Whether this serve holds the dispatch lease, taken now if free: one serve at a
        time is told of the work routed to no host; when it dies, another takes it."""
        if self._dispatch is None:
            stack = ExitStack()
            if stack.enter_context(self._leases.hold(dispatch_key(self._store))):
                self._dispatch = stack
            else:
                stack.close()
        return self._dispatch is not None

    def release_all(self) -> None:
        try:
            for stack in [*self._holding.values(), *filter(None, [self._dispatch])]:
                stack.close()
        finally:
            self._holding.clear()
            self._dispatch = None

    def close(self) -> None:
        try:
            self.release_all()
        finally:
            if self._own_leases:
                self._leases.close()


class ServingLook:
    """Which hosts some `serve` performs the steps on now: its host's lease, or the
    every-host lease, is held (Nova's service state up/down). Looks, never takes. On
    PostgreSQL it reads pg_locks once per look, through a connection the caller gives
    (one that holds no lease, so every lease it sees is held elsewhere): no connection of
    its own to keep or lose."""

    def __init__(self, store: StoreURL,
                 query: Callable[[str], Sequence[Mapping[str, Any]]]) -> None:
        self._store = store
        self._query = query
        self._leases = InstanceLeases(store) if store.backend != "postgres" else None

    def served(self, hosts: Iterable[str]) -> set[str] | None:
        """Those of `hosts` that are served; None when the store can't be asked now."""
        hosts = set(hosts)
        if self._leases is not None:
            return {host for host in hosts
                    if self._leases.held_elsewhere(*serving_keys(self._store, host))}
        import psycopg  # a PostgreSQL store's: a SQLite one never loads it

        try:
            rows = self._query(GRANTED_ADVISORY_LOCKS)
        except psycopg.Error as error:  # the connection is made again on its next use
            log.warning("serving.look_failed", error=str(error))
            return None
        held = {(int(row["classid"]), int(row["objid"])) for row in rows}
        if advisory_halves(serving_key(self._store, None)) in held:
            return hosts
        return {host for host in hosts
                if advisory_halves(serving_key(self._store, host)) in held}

    def close(self) -> None:
        if self._leases is not None:
            self._leases.close()

