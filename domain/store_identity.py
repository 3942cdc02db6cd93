"""The store's identity: a stable id made once, recorded as an event, carried by everything
the store makes outside itself (see docs/ownership.md).

One aggregate with a fixed id: two commands racing to make it collide on version 1, and the
loser reads the winner's. A store older than its identity got it on first use; the hosts it
had by then keep the pool names they were given (`legacy_hosts`), since their disks are
there.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.host import CATALOG_ID, HostCatalog
from domain.service import RecordConflict, Repository, find

STORE_IDENTITY_ID = uuid.UUID("3f0b6a0e-5d1c-4e8a-9b7f-2c4d6e8f0a13")
TAG_LENGTH = 8
# A name's tag: `-sh` and the tag, distinctive enough that a name chosen by hand (say
# `web-deadbeef`) is not taken for another store's.
_TAG = re.compile(rf"-sh([0-9a-f]{{{TAG_LENGTH}}})$")


class StoreIdentity(Aggregate):
    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return STORE_IDENTITY_ID

    @event("StoreIdentified")
    def __init__(self, store_id: str, legacy_hosts: list[str]) -> None:
        self.store_id = store_id
        self.legacy_hosts = list(legacy_hosts)


@dataclass(frozen=True)
class StoreMark:
    """What the adapters need of the identity: the id, its short tag for names, and which
    hosts were named before the store had an id."""

    store_id: str
    legacy_hosts: frozenset[str] = frozenset()

    @property
    def tag(self) -> str:
        return self.store_id.replace("-", "")[:TAG_LENGTH]

    @property
    def address_start(self) -> int:
        """Where this store starts in each /24 of the shared network."""
        return int(self.tag, 16) % 256

    def tagged(self, name: str) -> str:
        return f"{name}-sh{self.tag}"

    def owns_tagged(self, name: str | None) -> bool | None:
        """For a name that may carry a store's tag: True (ours), False (another store's) or
        None (no tag: judged by the ids this store issued)."""
        found = _TAG.search(name or "")
        if found is None:
            return None
        return found.group(1) == self.tag


def known_mark(repo: Repository) -> StoreMark | None:
    """The identity, or None when no command has written since shelf gave stores ids."""
    identity = find(repo, STORE_IDENTITY_ID, StoreIdentity)
    return None if identity is None else _mark_of(identity)


def identify_store(repo: Repository) -> StoreMark:
    """The identity, made now when the store has none (by any command that writes)."""
    known = known_mark(repo)
    if known is not None:
        return known
    catalog = find(repo, CATALOG_ID, HostCatalog)
    identity = StoreIdentity(store_id=str(uuid.uuid4()),
                             legacy_hosts=list(catalog.names) if catalog else [])
    try:
        repo.save(identity)
    except RecordConflict:  # another command made it first: that one is the identity
        return identify_store(repo)
    return _mark_of(identity)


def _mark_of(identity: StoreIdentity) -> StoreMark:
    return StoreMark(identity.store_id, frozenset(identity.legacy_hosts))
