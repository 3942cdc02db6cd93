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

from application.bootstrap import Context
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
    context = Context(store_url)
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


def queue_behind_a_busy_writer(ctx: Context, saves: dict[str, Any]) -> dict[str, Exception]:
    """A blocker save leads and waits on the held lock; then `saves` queue behind it, in
    order. Returns the RecordConflict of each save that got one."""
    errors: dict[str, Exception] = {}

    def save(label: str, aggregate: Any) -> None:
        try:
            ctx.repo.save(aggregate)
        except RecordConflict as error:
            errors[label] = error

    with writer_busy(ctx):
        threads = [threading.Thread(target=save, args=("blocker", NameIndex(
            name="blocker", instance_id="x")))]
        threads[0].start()
        time.sleep(0.3)
        for label, aggregate in saves.items():
            threads.append(threading.Thread(target=save, args=(label, aggregate)))
            threads[-1].start()
            time.sleep(0.05)
        time.sleep(0.3)
    for thread in threads:
        thread.join(timeout=60)
    assert ctx.repo.get(name_index_id("blocker")).instance_id == "x"
    return errors


def test_two_saves_of_one_aggregate_are_never_in_one_batch(ctx: Context) -> None:
    ctx.repo.save(NameIndex(name="taken", instance_id="first"))
    before = ctx.repo.commits.transactions
    one, other = ctx.repo.get(name_index_id("taken")), ctx.repo.get(name_index_id("taken"))
    one.free("first")
    other.free("first")  # the same next version as `one`'s: only one can be stored
    errors = queue_behind_a_busy_writer(ctx, {
        "one": one, "other": other, "bystander": NameIndex(name="bystander", instance_id="b")})
    assert list(errors) == ["other"]  # it waited for the next batch and failed there, alone
    # The blocker's, then `one` with the bystander: no batch had to be split.
    assert ctx.repo.commits.transactions - before == 2
    assert ctx.repo.get(name_index_id("taken")).instance_id is None
    assert ctx.repo.get(name_index_id("bystander")).instance_id == "b"


def test_a_conflict_with_another_writer_fails_only_that_save(ctx: Context) -> None:
    ctx.repo.save(NameIndex(name="taken", instance_id="first"))
    stale = ctx.repo.get(name_index_id("taken"))
    elsewhere = Context(ctx.store.url)  # another process's repository
    try:
        index = elsewhere.repo.get(name_index_id("taken"))
        index.free("first")
        elsewhere.repo.save(index)
    finally:
        elsewhere.close()
    stale.free("first")
    before = ctx.repo.commits.transactions
    errors = queue_behind_a_busy_writer(ctx, {
        "stale": stale, "bystander": NameIndex(name="bystander", instance_id="b")})
    assert list(errors) == ["stale"]
    # The blocker's; the shared one failed, and was written again one save at a time.
    assert ctx.repo.commits.transactions - before == 2
    assert ctx.repo.get(name_index_id("bystander")).instance_id == "b"


def test_many_threads_saving_at_once_lose_nothing(ctx: Context) -> None:
    threads, each = 8, 25

    def save_many(thread: int) -> None:
        for number in range(each):
            ctx.repo.save(NameIndex(name=f"t{thread}-{number}", instance_id=f"i{number}"))

    workers = [threading.Thread(target=save_many, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers)
    assert ctx.repo.commits.saves == threads * each
    for thread in range(threads):
        for number in range(each):
            assert ctx.repo.get(name_index_id(f"t{thread}-{number}")).instance_id == f"i{number}"
