"""The demo's API part: `shelf api` in a process of its own on the demo's store, and one
request to it as the `openstack` client makes it, with a real HTTP client (httpx)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import httpx

TOKEN = "admin:admin"  # noauth: user:project (the user named admin is an admin)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(url: str, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and api.poll() is None:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"demo: `shelf api` did not answer at {url}")


def show_api_request(store: str) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    listen = url.removeprefix("http://")
    print(f"$ shelf api --listen {listen} --auth noauth &", flush=True)
    api = subprocess.Popen([sys.executable, "-m", "cli.main", "--store", store, "api",
                            "--listen", listen, "--auth", "noauth"])
    try:
        _wait_until_up(url, api)
        print(f"GET {url}/v2.1/servers/detail?all_tenants=1 (httpx, as the openstack "
              f"client sends it: X-Auth-Token: {TOKEN}, OpenStack-API-Version: compute "
              "2.96)", flush=True)
        answer = httpx.get(f"{url}/v2.1/servers/detail", params={"all_tenants": "1"},
                           headers={"X-Auth-Token": TOKEN,
                                    "OpenStack-API-Version": "compute 2.96"}, timeout=30)
        print(f"HTTP {answer.status_code}, x-openstack-request-id "
              f"{answer.headers['x-openstack-request-id']}, "
              f"{answer.headers['openstack-api-version']}")
        _print_servers(answer.json()["servers"])
    finally:
        api.terminate()
        api.wait(timeout=30)


def _print_servers(servers: list[dict[str, Any]]) -> None:
    print(f"  {'name':<8} {'status':<18} {'host':<5} {'project':<8} {'flavor'}")
    for server in servers:
        print(f"  {server['name']:<8} {server['status']:<18} "
              f"{server.get('OS-EXT-SRV-ATTR:host') or '-':<5} {server['tenant_id']:<8} "
              f"{server['flavor']['original_name']}", flush=True)
