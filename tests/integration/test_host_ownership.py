"""`serve --host`: each serve performs the hypervisor steps of its own hosts only, and an
instance passes from one serve to another where a step moves it (unshelve onto another
host), without waiting for the 5-second sweep. Both stores, libvirt's test driver.

Each serve here has test-driver connections of its own, as a serve on another machine
would: a step performed by the wrong serve would leave its domain in that serve's
connection, not in the owner's."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.eventstore import parse_store_url
from adapters.leases import InstanceLeases
from adapters.libvirt_host import LibvirtHosts
from adapters.serving import ServingLeases, projections_key
from application import worker as worker_module
from application.bootstrap import Context
from application.worker import Worker
from domain.process_manager import Settings
from domain.service import new_request_id
from tests.conftest import Harness, node_xml

WAIT = ("--wait", "--timeout", "60")


class Serve:
    """A worker thread owning `hosts`, with test-driver connections of its own."""

    def __init__(self, store: str, data: Path, hosts: frozenset[str] | None) -> None:
        self.ctx = Context(store, data)
        self.drivers = LibvirtHosts(self.ctx.host_uri, data)
        self.ctx = Context(store, data, hosts=self.drivers)
        self.worker = Worker(self.ctx, Settings(shutdown_timeout=1, hosts=hosts), threads=2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def opened(self) -> set[str]:
        """The hosts this serve ever connected to."""
        return set(self.drivers._drivers)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)
        self.drivers.close()
        self.ctx.close()


@pytest.fixture
def serves(harness_factory: Any, store_url: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Harness, Serve, Serve]]:
    # The sweep would hide a missed hand-over: it drives everything in flight every 5 s.
    monkeypatch.setattr(worker_module, "SWEEP_SECONDS", 3600.0)
    h = harness_factory(start=False)
    h.add_host("h1")
    h.add_host("h2")
    first = Serve(store_url, tmp_path / "data", frozenset({"h1"}))
    second = Serve(store_url, tmp_path / "data", frozenset({"h2"}))
    yield h, first, second
    first.close()
    second.close()


def test_each_serve_performs_its_own_hosts_steps_and_hands_over(
        serves: tuple[Harness, Serve, Serve]) -> None:
    h, first, second = serves
    h.ok("boot", "vm", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
         "--disk-gb", "1", *WAIT)
    assert first.drivers.driver("h1").power_state(h.show("vm")["id"]) == "running"
    h.ok("shelve", "vm", *WAIT)
    assert h.show("vm")["vm_state"] == "shelved_offloaded"
    h.ok("unshelve", "vm", "--host", "h2", *WAIT)
    shown = h.show("vm")
    assert (shown["vm_state"], shown["host"]) == ("active", "h2")
    # Spawned by the serve that owns h2, in its own connection; h1's serve never went there.
    assert second.drivers.driver("h2").power_state(shown["id"]) == "running"
    assert first.opened() == {"h1"}
    assert second.opened() == {"h2"}


def test_placement_skips_a_host_no_serve_performs_steps_on(
        harness_factory: Any, store_url: str, tmp_path: Path) -> None:
    h = harness_factory(start=False)
    h.add_host("h1")
    h.add_host("big", memory_mb=65536)  # the freest host, but nobody serves it yet
    first = Serve(store_url, tmp_path / "data", frozenset({"h1"}))
    try:
        h.ok("boot", "vm", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
             "--disk-gb", "1", *WAIT)
        h.ok("shelve", "vm", *WAIT)
        h.ok("unshelve", "vm", *WAIT)
        assert (h.show("vm")["vm_state"], h.show("vm")["host"]) == ("active", "h1")
        big = Serve(store_url, tmp_path / "data", frozenset({"big"}))
        h.ok("boot", "large", "--host", "big", "--vcpus", "1", "--memory-mb", "16384",
             "--disk-gb", "1", *WAIT)
        h.ok("shelve", "large", *WAIT)
        big.close()
        # Only the unserved host fits: claimed there rather than refused, and it waits.
        h.ok("unshelve", "large")
        big = Serve(store_url, tmp_path / "data", frozenset({"big"}))
        try:
            assert h.settled("large", "active")["host"] == "big"
            h.ok("shelve", "vm", *WAIT)
            h.ok("unshelve", "vm", *WAIT)  # now served: the freest host wins again
            shown = h.show("vm")
            assert (shown["vm_state"], shown["host"]) == ("active", "big")
            assert big.drivers.driver("big").power_state(shown["id"]) == "running"
        finally:
            big.close()
    finally:
        first.close()


def test_a_serve_of_every_host_serves_them_all_for_placement(
        harness_factory: Any, store_url: str) -> None:
    h = harness_factory(start=False)
    h.add_host("h1")
    h.add_host("h2")
    per_host = Worker(Context(store_url, h.tmp / "data"),
                      Settings(hosts=frozenset({"h1"})))
    try:
        per_host.hold_serving_leases()
        assert per_host.is_served("h1") and not per_host.is_served("h2")
        every = ServingLeases(parse_store_url(store_url), None)  # a serve without --host
        try:
            assert every.refresh() == []
            assert per_host.is_served("h2")
        finally:
            every.close()
        assert not per_host.is_served("h2")
    finally:
        per_host.shutdown()
        per_host.ctx.close()


def test_a_serve_for_an_unknown_host_is_refused(harness_factory: Any) -> None:
    h = harness_factory(start=False)
    h.add_host("h1")
    result = h.shelf("serve", "--host", "h1", "--host", "nosuch")
    assert result.code == 3
    assert result.err.strip().splitlines() == ["shelf: no such host: nosuch"]


def test_an_instance_held_by_another_serve_is_tried_again_soon(
        harness_factory: Any, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "SWEEP_SECONDS", 3600.0)
    h = harness_factory()
    h.add_host("h1")
    h.ok("boot", "vm", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
         "--disk-gb", "1", *WAIT)
    instance_id = uuid.UUID(h.show("vm")["id"])
    other = InstanceLeases(parse_store_url(store_url))  # as another serve holding it
    try:
        with other.hold(instance_id) as held:
            assert held
            h.ok("stop", "vm")
            time.sleep(0.5)  # long enough for the worker to try, and find it held
            assert h.show("vm")["vm_state"] == "active"
        h.settled("vm", "stopped")
    finally:
        other.close()


def test_a_serve_leaves_the_projections_to_one_writing_them(
        harness_factory: Any, store_url: str) -> None:
    h = harness_factory(start=False)
    ctx = Context(store_url, h.tmp / "data")
    ctx.projector.ensure_schema()
    worker = Worker(ctx, Settings())
    node = node_xml(h.tmp / "h1.xml")  # an event the projections have not taken yet:
    ctx.service.add_host("h1", f"test://{node}", 8, 8192, 100, "tester", new_request_id())
    other = InstanceLeases(parse_store_url(store_url))  # another serve, writing them now
    try:
        behind = ctx.projector.position()
        with other.hold(projections_key(ctx.store)):
            worker.catch_up_projections(idle=True)
            assert ctx.projector.position() == behind
        worker.catch_up_projections(idle=True)
        assert ctx.projector.position() > behind
    finally:
        other.close()
        worker.shutdown()
        ctx.close()
