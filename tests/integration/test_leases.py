"""Two workers on one store never drive one instance at once (both stores)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from adapters.eventstore import parse_store_url
from adapters.leases import InstanceLeases
from adapters.libvirt_host import LibvirtHosts
from application.bootstrap import Context
from application.worker import Worker
from domain.process_manager import Settings


def test_a_lease_is_held_by_one_holder_at_a_time(store_url: str) -> None:
    first, second = InstanceLeases(parse_store_url(store_url)), InstanceLeases(
        parse_store_url(store_url))
    instance_id = uuid.uuid4()
    try:
        with first.hold(instance_id) as held:
            assert held
            with second.hold(instance_id) as also:
                assert not also
        with second.hold(instance_id) as held_now:
            assert held_now  # released when the first holder let go
    finally:
        first.close()
        second.close()


def test_two_workers_finish_every_shelve_once(
    harness_factory: Any, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness_factory(start=False)
    lookup = Context(store_url, tmp_path / "data")
    hosts = LibvirtHosts(lookup.host_uri, tmp_path / "data")
    h.shared_hosts = hosts
    h.start_worker()
    h.add_host("h1")
    names = [f"vm{n}" for n in range(4)]
    for name in names:
        h.ok("boot", name, "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
             "--disk-gb", "1", "--wait", "--timeout", "60")
    h.stop_worker()
    for name in names:
        h.ok("shelve", name)
    stops = [threading.Event(), threading.Event()]
    threads = []
    for stop in stops:
        ctx = Context(store_url, tmp_path / "data", hosts=hosts)
        worker = Worker(ctx, Settings(shutdown_timeout=1))
        threads.append(threading.Thread(target=worker.run, args=(stop, True)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for name in names:
        assert h.show(name)["vm_state"] == "shelved_offloaded"
        history = h.ok("history", name, "--json").json()
        shelve = [r["event"] for r in history if r["request_id"] == history[-1]["request_id"]]
        assert shelve.count("Snapshotted") == 1 and shelve.count("Destroyed") == 1
    assert len(h.images()) == len(names)
    hosts.close()
    lookup.close()


def test_looking_at_a_lease_neither_takes_it_nor_misreads_it(store_url: str) -> None:
    """`held_elsewhere` from several threads at once: a free lease always reads free, a
    held one always held, and its holder can take it meanwhile (it is never taken to
    look)."""
    store = parse_store_url(store_url)
    looker, holder = InstanceLeases(store), InstanceLeases(store)
    free, held = uuid.uuid4(), uuid.uuid4()
    answers: list[tuple[bool, bool]] = []

    def look() -> None:
        for _ in range(200):
            answers.append((looker.held_elsewhere(free), looker.held_elsewhere(held)))

    try:
        with holder.hold(held) as taken:
            assert taken
            threads = [threading.Thread(target=look) for _ in range(4)]
            for thread in threads:
                thread.start()
            for _ in range(100):
                with holder.hold(free) as also:  # never refused for being looked at
                    assert also
            for thread in threads:
                thread.join()
        assert answers and set(answers) <= {(False, True), (True, True)}
        assert answers.count((False, True)) > 0
        assert not looker.held_elsewhere(held)  # let go: free again
    finally:
        looker.close()
        holder.close()
