"""Shared fixtures: a fresh PostgreSQL database per test, test-driver hosts, and a harness
that runs the real worker in this process (the test driver's state lives only in the
connection that made it) while commands go through the real CLI entrypoint."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.failpoints import EnvFailpoints
from adapters.libvirt_host import LibvirtHosts
from application.bootstrap import Context
from application.worker import Worker
from cli.main import main
from domain.process_manager import Settings

PG_ADMIN = os.environ.get("SHELF_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI") == "true"


def pg_admin_conninfo() -> str:
    return PG_ADMIN


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes into the default data directory (/var/lib/shelf as root): a test that
    sets no SHELF_DATA_DIR of its own gets one under its tmp_path."""
    if not os.environ.get("SHELF_DATA_DIR"):
        monkeypatch.setenv("SHELF_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A database of its own, dropped afterwards."""
    name = f"shelf_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        _pg_unavailable(str(error).strip())
    base = PG_ADMIN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shelf.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def node_xml(path: Path, cpus: int = 8, memory_mb: int = 8192) -> Path:
    path.write_text(
        f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>"
        f"<threads>1</threads><active>{cpus}</active><mhz>2000</mhz></cpu>"
        f"<memory>{memory_mb * 1024}</memory></node>\n"
    )
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Harness:
    """The real CLI against a store, and `serve`'s worker running in this process."""

    store: str
    tmp: Path
    settings: Settings = field(default_factory=lambda: Settings(shutdown_timeout=2))
    worker_ctx: Context | None = None
    worker: Worker | None = None
    shared_hosts: Any = None  # keep the test driver's state across a worker restart
    failpoints: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def shelf(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["--store", self.store, *argv])
        return Result(code, out.getvalue(), err.getvalue())

    def ok(self, *argv: str) -> Result:
        result = self.shelf(*argv)
        assert result.code == 0, f"shelf {' '.join(argv)} -> {result.code}: {result.err}"
        return result

    def add_host(self, name: str, cpus: int = 8, memory_mb: int = 8192,
                 disk_gb: int = 100) -> None:
        node = node_xml(self.tmp / f"{name}.xml", cpus, memory_mb)
        self.ok("host", "add", name, "--uri", f"test://{node}", "--disk-gb", str(disk_gb))

    def start_worker(self) -> None:
        self.worker_ctx = Context(self.store, self.tmp / "data",
                                  hosts=self.shared_hosts)
        worker = self.worker = Worker(self.worker_ctx, self.settings,
                                      EnvFailpoints(self.failpoints))
        self._thread = threading.Thread(target=worker.run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.worker_ctx is not None:
            self.worker_ctx.close()

    def wait_until_idle(self) -> None:
        """Until the worker drives nothing (what it counts is counted by then)."""
        assert self.worker is not None
        deadline = time.monotonic() + 60
        while self.worker.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.worker.busy()

    def wait_for_offload_timer(self) -> None:
        """Until the worker's offload timer has looked again, in the worker's own thread
        (its database connection is the worker's)."""
        assert self.worker is not None
        asked, deadline = time.monotonic(), time.monotonic() + 60
        while self.worker.last_timer_check <= asked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.worker.last_timer_check > asked

    def driver(self, host: str) -> Any:
        """The worker's own connection to a host: the test driver's real state."""
        assert self.worker_ctx is not None
        return self.worker_ctx.hosts.driver(host)

    def show(self, ref: str) -> dict[str, Any]:
        data: dict[str, Any] = self.ok("show", ref, "--json").json()
        return data

    def settled(self, ref: str, vm_state: str) -> dict[str, Any]:
        """The instance once it is in `vm_state` (a request made without --wait, whose
        drive may not have started yet); fails after 60 s."""
        deadline = time.monotonic() + 60
        while (shown := self.show(ref))["vm_state"] != vm_state and (
                time.monotonic() < deadline):
            time.sleep(0.05)
        assert shown["vm_state"] == vm_state, shown
        return shown

    def hosts(self) -> dict[str, dict[str, Any]]:
        return {row["name"]: row for row in self.ok("host", "list", "--json").json()}

    def images(self) -> list[dict[str, Any]]:
        images: list[dict[str, Any]] = self.ok("image", "list", "--json").json()
        return images


@pytest.fixture
def hosts(store_url: str, tmp_path: Path) -> Iterator[Any]:
    """Test-driver connections that outlive a worker: the hosts' state survives restarts."""
    lookup = Context(store_url, tmp_path / "data")
    shared = LibvirtHosts(lookup.host_uri, tmp_path / "data")
    yield shared
    shared.close()
    lookup.close()


@pytest.fixture
def harness_factory(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    monkeypatch.setenv("SHELF_DATA_DIR", str(tmp_path / "data"))
    made: list[Harness] = []

    def make(
        settings: Settings | None = None, start: bool = True, hosts: Any = None,
        failpoints: str = "",
    ) -> Harness:
        harness = Harness(store_url, tmp_path, settings or Settings(shutdown_timeout=2),
                          shared_hosts=hosts, failpoints=failpoints)
        made.append(harness)
        if start:
            harness.start_worker()
        return harness

    yield make
    for harness in made:
        harness.stop_worker()
