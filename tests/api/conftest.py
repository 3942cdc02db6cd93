"""The API in this process (a uvicorn server in a thread) against the test's store, beside
the Harness's worker: libvirt's test driver keeps its state only in the worker's
connection, so `serve` must run here too. Clients talk to it over loopback: the real
`openstack` CLI as a subprocess, httpx, and tempest's service clients."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from api.serving import ApiSettings, build_app
from domain.process_manager import Settings

OPENSTACK = str(Path(sys.executable).with_name("openstack"))
# noauth tokens: user:project[:roles]
CLOUDS = {"alice": "alice:web", "admin": "admin:admin", "bob": "bob:other",
          "reader": "carol:web:reader"}


@dataclass
class Api:
    url: str
    tmp: Path
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, token: str = "alice:web", version: str | None = None,
               roles: str | None = None) -> httpx.Client:
        headers = {"X-Auth-Token": token}
        if version:
            headers["OpenStack-API-Version"] = f"compute {version}"
        if roles:
            headers["X-Roles"] = roles
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def openstack(self, cloud: str, *argv: str, version: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
        """The real client, as an operator types it."""
        extra = ["--os-compute-api-version", version] if version else []
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(self.tmp / "clouds.yaml")}
        done = subprocess.run([OPENSTACK, "--os-cloud", cloud, *extra, *argv], env=env,
                              capture_output=True, text=True, timeout=300)
        if check:
            assert done.returncode == 0, f"openstack {' '.join(argv)}: {done.stderr}"
        return done

    def openstack_json(self, cloud: str, *argv: str, version: str | None = None) -> Any:
        return json.loads(self.openstack(cloud, *argv, "-f", "json", version=version).stdout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def clouds_yaml(url: str) -> str:
    """The clouds.yaml of the README, one cloud per test identity."""
    lines = ["clouds:"]
    for name, token in CLOUDS.items():
        lines += [f"  {name}:", "    auth_type: admin_token", "    auth:",
                  f"      token: {token}", f"      endpoint: {url}/v2.1",
                  f"    compute_endpoint_override: {url}/v2.1",
                  f"    image_endpoint_override: {url}/image",
                  f"    identity_endpoint_override: {url}/identity/v3"]
    return "\n".join(lines) + "\n"


def start_api(store: str, tmp: Path, policy_file: Path | None = None) -> Api:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = build_app(ApiSettings(listen=f"127.0.0.1:{port}", store_url=store,
                                data_dir=tmp / "data", policy_file=policy_file,
                                auth="noauth"))
    server, thread = serve_in_thread(app, sock)
    (tmp / "clouds.yaml").write_text(clouds_yaml(url))
    return Api(url, tmp, server, thread)


def serve_in_thread(app: Any, sock: socket.socket,
                    **config: Any) -> tuple[uvicorn.Server, threading.Thread]:
    """uvicorn serving `app` on `sock` in a daemon thread, once it has started."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return server, thread


@pytest.fixture
def cloud(harness_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, Api]]:
    """A worker (offload at once, quick shutdowns), two hosts, an image, and the API."""
    harness = harness_factory(Settings(shelved_offload_time=0, shutdown_timeout=1))
    harness.add_host("h1")
    harness.add_host("h2")
    disk = tmp_path / "cirros.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    harness.ok("image", "import", "cirros", str(disk))
    api = start_api(harness.store, tmp_path)
    yield harness, api
    api.stop()
    api.server.config.app.state.contexts.close()
