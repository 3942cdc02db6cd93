"""`serve`'s worker: how often it writes the projections (both stores)."""

from __future__ import annotations

from pathlib import Path

import pytest

import application.worker as worker_module
from application.bootstrap import Context
from application.worker import Worker
from domain.process_manager import Settings
from domain.service import new_request_id
from tests.conftest import node_xml


def test_a_busy_worker_writes_the_projections_at_most_every_half_second(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The interval made long: on a loaded machine the first catch-up (which makes the
    # schema) and a host's add took over half a second, and the busy write came due.
    monkeypatch.setattr(worker_module, "PROJECTIONS_SECONDS", 3600.0)
    ctx = Context(store_url, tmp_path / "data")
    worker = Worker(ctx, Settings())
    try:
        def add_host(name: str) -> int:
            uri = f"test://{node_xml(tmp_path / f'{name}.xml')}"
            ctx.service.add_host(name, uri, 8, 8192, 100, "tester", new_request_id())
            return ctx.app.recorder.max_notification_id() or 0

        first = add_host("h1")
        worker.catch_up_projections(idle=False)  # the first time: written
        assert ctx.projector.position() == first
        second = add_host("h2")
        worker.catch_up_projections(idle=False)  # busy, and written just now: left
        assert ctx.projector.position() == first
        worker.catch_up_projections(idle=True)  # nothing more to do: written
        assert ctx.projector.position() == second
    finally:
        worker.shutdown()
        ctx.close()
