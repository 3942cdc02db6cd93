"""Group commit on the real stores: saves that queue behind a busy writer are written in
one transaction, and a conflict in that transaction fails only the conflicting save.

The writer is made busy for real: another connection holds the store's write lock
(SQLite's `BEGIN IMMEDIATE`, the events table's lock on PostgreSQL) while the saves line up.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cli.bootstrap import Context
from domain.registry import NameIndex, name_index_id
from domain.service import RecordConflict

SAVERS = 5


@contextlib.contextmanager
def writer_busy(ctx: Context) -> Iterator[None]:
    """Hold the store's write lock from another connection until the block ends."""
    assert ctx.app is not None  # its tables exist before they are locked
    if ctx.store.backend == "sqlite":
        conn: Any = sqlite3.connect(str(ctx.store.sqlite_path), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn = psycopg.connect(ctx.store.psycopg_conninfo())
        conn.execute("LOCK TABLE shelf_events IN EXCLUSIVE MODE")
    try:
        yield
    finally:
        conn.rollback()
        conn.close()


@pytest.fixture
def ctx(store_url: str) -> Iterator[Context]:
    context = Context(store_url, "tester")
    yield context
    context.close()


def test_saves_queued_behind_a_busy_writer_share_one_transaction(ctx: Context) -> None:
    names = [f"vm{i}" for i in range(SAVERS)]
    indexes = [NameIndex(name=name, instance_id=f"i-{name}") for name in names]
    with writer_busy(ctx):
        threads = [threading.Thread(target=ctx.repo.save, args=(index,)) for index in indexes]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the first save waits on the lock; the others queue behind it
    for thread in threads:
        thread.join(timeout=60)
    for name in names:
        assert ctx.repo.get(name_index_id(name)).instance_id == f"i-{name}"
    # The first save took the lead (alone, or with any that arrived at once); all that
    # queued behind it while it waited went together in the next transaction.
    assert ctx.repo.commits.saves == SAVERS
    assert ctx.repo.commits.transactions <= 2


def test_a_conflict_in_a_shared_transaction_fails_only_that_save(ctx: Context) -> None:
    ctx.repo.save(NameIndex(name="taken", instance_id="first"))
    winner, loser = ctx.repo.get(name_index_id("taken")), ctx.repo.get(name_index_id("taken"))
    winner.free("first")
    loser.free("first")  # the same next version as the winner's: only one can be stored
    bystander = NameIndex(name="bystander", instance_id="b")
    errors: dict[str, BaseException] = {}

    def save(label: str, aggregate: Any) -> None:
        try:
            ctx.repo.save(aggregate)
        except RecordConflict as error:
            errors[label] = error

    blocker = NameIndex(name="blocker", instance_id="x")
    with writer_busy(ctx):
        first = threading.Thread(target=save, args=("blocker", blocker))
        first.start()
        time.sleep(0.3)  # the blocker leads and waits on the lock; the rest queue
        rest = [threading.Thread(target=save, args=(label, aggregate)) for label, aggregate
                in (("one", winner), ("other", loser), ("bystander", bystander))]
        for thread in rest:
            thread.start()
        time.sleep(0.3)
    for thread in (first, *rest):
        thread.join(timeout=60)
    assert ctx.repo.commits.transactions >= 3  # the shared one failed and was split
    assert len(errors) == 1 and set(errors) < {"one", "other"}
    assert ctx.repo.get(name_index_id("taken")).instance_id is None
    assert ctx.repo.get(name_index_id("bystander")).instance_id == "b"
    assert ctx.repo.get(name_index_id("blocker")).instance_id == "x"
