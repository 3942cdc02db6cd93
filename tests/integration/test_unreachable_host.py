"""Hosts that never answer, or stop answering: every wait on them is bounded, and a host
can be removed (issue 14, item 4).

"Never answers" is a listener of the test's own on 127.0.0.1 that accepts the TCP
connection and says nothing. "Stops answering" is a proxy of the test's own on 127.0.0.1
to the local libvirtd's socket, serving libvirt's test driver (`test+tcp://`), which the
test freezes: it keeps both connections open and forwards nothing more. Nothing here
talks to any address but loopback. The bounds are set short (1 s to connect; keepalive
1 s x 1), and no test asserts a time: each only has to return (pytest-timeout stops a
hang).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, Harness, Result, node_xml

pytestmark = pytest.mark.timeout(120)

LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"


class _Listener:
    """A TCP listener on 127.0.0.1 (port chosen by the kernel) that accepts connections."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.sockets.append(client)
            self.accepted(client)

    def accepted(self, client: socket.socket) -> None:
        """Silent: the connection stays open, and nothing is ever said on it."""

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        for sock in self.sockets:  # a connect still waiting on one ends now
            sock.close()


class _FreezableProxy(_Listener):
    """Forwards each connection to libvirtd's socket until frozen; then forwards nothing
    more, and closes nothing: a host that went silent mid-connection."""

    def __init__(self) -> None:
        self.frozen = threading.Event()
        super().__init__()

    def accepted(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(LIBVIRT_SOCKET)
        self.sockets.append(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.frozen.is_set():
                self._closed.wait()  # held until the test ends
                return
            try:
                sink.sendall(data)
            except OSError:
                return


@pytest.fixture
def short_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELF_LIBVIRT_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("SHELF_LIBVIRT_KEEPALIVE_INTERVAL", "1")
    monkeypatch.setenv("SHELF_LIBVIRT_KEEPALIVE_COUNT", "1")


@pytest.fixture
def silent_uri() -> Iterator[str]:
    listener = _Listener()
    yield f"qemu+tcp://127.0.0.1:{listener.port}/system"
    listener.close()


@pytest.fixture
def proxy() -> Iterator[_FreezableProxy]:
    if not os.path.exists(LIBVIRT_SOCKET):
        if IN_CI:
            pytest.fail(f"libvirtd is required under CI=true: no {LIBVIRT_SOCKET}")
        pytest.skip(f"libvirtd not running: no {LIBVIRT_SOCKET}")
    listener = _FreezableProxy()
    yield listener
    listener.close()


def _one_line(result: Result) -> str:
    """The command's one error line (the worker runs in this process: its log lines share
    stderr, and are not the command's)."""
    lines = [line for line in result.err.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.err
    return lines[0]


def _boot_failing(h: Harness, host: str) -> str:
    """A boot on a host that never answers: it fails (SetupNetwork, then its undo) and the
    instance keeps its claim there, as issue 14 found it."""
    booted = h.shelf("boot", "web1", "--host", host, "--vcpus", "2", "--memory-mb", "512",
                     "--disk-gb", "5", "--wait")
    assert booted.code == 1, booted
    assert "no answer within 1 s" in _one_line(booted)
    instance_id = booted.out.split()[0]
    shown = h.show(instance_id)
    assert shown["status"] == "ERROR"
    assert "no answer within 1 s" in shown["fault"]["message"]
    history = h.ok("history", instance_id, "--json").json()
    failed = [row["step"] for row in history if row["event"] == "StepFailed"]
    assert failed == ["SetupNetwork", "Destroy"]  # the boot, then its undo
    assert h.hosts()[host]["vcpus_used"] == 2  # the claim is still held
    return instance_id


def _claims_cleared(h: Harness, host: str | None, instance_id: str) -> None:
    h.settled(instance_id, "deleted")  # a --force delete is finished by the worker
    h.wait_until_idle()
    if host is not None:
        row = h.hosts()[host]
        assert (row["vcpus_used"], row["memory_mb_used"], row["instances"]) == (0, 0, 0)


def test_host_add_of_a_daemon_that_never_answers_fails_within_the_bound(
    harness_factory: Any, silent_uri: str, short_bounds: None
) -> None:
    h = harness_factory()  # its worker makes the store (else `host list`: no such store)
    result = h.shelf("host", "add", "mute", "--uri", silent_uri)
    assert result.code == 1
    assert _one_line(result) == (f"shelf: host mute: connect to {silent_uri}: no answer "
                                 "within 1 s (SHELF_LIBVIRT_CONNECT_TIMEOUT)")
    assert h.hosts() == {}  # nothing recorded
    explicit = h.shelf("host", "add", "mute", "--uri", silent_uri, "--connect-timeout", "0.5")
    assert "no answer within 0.5 s" in _one_line(explicit)
    refused = h.shelf("host", "add", "mute", "--uri", silent_uri, "--connect-timeout", "-1")
    assert refused.code == 2
    assert "--connect-timeout must be" in _one_line(refused)


def test_delete_on_a_host_that_never_answers_completes_without_it(
    harness_factory: Any, silent_uri: str, short_bounds: None
) -> None:
    h = harness_factory()
    h.ok("host", "add", "mute", "--uri", silent_uri, "--vcpus", "8", "--memory-mb", "8192",
         "--disk-gb", "100")
    instance_id = _boot_failing(h, "mute")

    refused = h.shelf("host", "remove", "mute")
    assert refused.code == 4
    assert "1 instance(s) hold claims there" in _one_line(refused)

    deleted = h.ok("delete", instance_id, "--wait")
    assert f"{instance_id}: deleted without host mute (CleanNetwork: " in deleted.out
    _claims_cleared(h, "mute", instance_id)
    delete = h.ok("actions", instance_id, "--json").json()[-1]
    assert delete["action"] == "delete" and delete["result"] == "Success"
    skipped = [e for e in delete["events"] if e["result"] == "Skipped"]
    assert [(e["event"], e["host"]) for e in skipped] == [("CleanNetwork", "mute")]
    assert "shelf reconcile" in skipped[0]["details"]

    reconciled = h.shelf("reconcile", "--json")  # bounded too: the host is reported
    assert reconciled.code == 1
    assert [row["kind"] for row in reconciled.json()] == ["unreachable-host"]

    h.ok("host", "remove", "mute")  # no claims left
    assert "mute" not in h.hosts()


def test_host_remove_force_deletes_its_instances_locally(
    harness_factory: Any, silent_uri: str, short_bounds: None, tmp_path: Path
) -> None:
    h = harness_factory()
    h.ok("host", "add", "mute", "--uri", silent_uri, "--vcpus", "8", "--memory-mb", "8192",
         "--disk-gb", "100")
    failed_id = _boot_failing(h, "mute")
    h.add_host("lab")
    active_id = h.ok("boot", "web2", "--host", "lab", "--vcpus", "1", "--memory-mb", "256",
                     "--disk-gb", "1", "--wait").out.split()[0]

    for host, instance_id in (("mute", failed_id), ("lab", active_id)):
        assert h.shelf("host", "remove", host).code == 4
        removed = h.ok("host", "remove", host, "--force")
        assert f"{instance_id} " in removed.out and "deleted without host" in removed.out
        _claims_cleared(h, None, instance_id)
        assert host not in h.hosts()
        history = [row["event"] for row in h.ok("history", instance_id, "--json").json()]
        assert history[-4:] == ["DeleteRequested", "LeftOnHost", "ClaimReleased", "Deleted"]

    # Gone from placement: a boot there is refused; the name can be added again.
    assert h.shelf("boot", "web3", "--host", "lab", "--vcpus", "1", "--memory-mb", "256",
                   "--disk-gb", "1").code == 3
    node = node_xml(tmp_path / "again.xml")
    h.ok("host", "add", "lab", "--uri", f"test://{node}", "--disk-gb", "50")
    row = h.hosts()["lab"]
    assert (row["disk_gb"], row["vcpus_used"], row["instances"]) == (50, 0, 0)
    again = h.ok("boot", "web2", "--host", "lab", "--vcpus", "1", "--memory-mb", "256",
                 "--disk-gb", "1", "--wait").out.split()[0]
    assert h.show(again)["status"] == "ACTIVE"
    assert h.driver("lab").uri == f"test://{node}"  # serve dropped the old connection


def test_a_host_that_stops_answering_fails_a_step_within_keepalive(
    harness_factory: Any, proxy: _FreezableProxy, short_bounds: None, tmp_path: Path
) -> None:
    h = harness_factory()
    node = node_xml(tmp_path / f"node-{uuid.uuid4().hex[:8]}.xml")
    uri = f"test+tcp://127.0.0.1:{proxy.port}{node}"
    h.ok("host", "add", "far", "--uri", uri, "--disk-gb", "100")  # capacity read through it
    assert h.hosts()["far"]["vcpus"] == 8
    booted = h.ok("boot", "web1", "--host", "far", "--vcpus", "2", "--memory-mb", "512",
                  "--disk-gb", "5", "--wait")
    instance_id = booted.out.split()[0]
    assert h.show(instance_id)["status"] == "ACTIVE"

    proxy.frozen.set()
    stopped = h.shelf("stop", instance_id, "--wait")
    assert stopped.code == 1
    assert "keepalive timeout" in _one_line(stopped)
    shown = h.show(instance_id)
    assert shown["fault"]["step"] == "PowerOff" and shown["status"] == "ACTIVE"

    deleted = h.ok("delete", instance_id, "--wait")
    assert "deleted without host far (PowerOff: " in deleted.out
    _claims_cleared(h, "far", instance_id)
