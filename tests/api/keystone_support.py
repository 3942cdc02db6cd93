"""A real Keystone (PyPI `keystone` 30.0.0) for the tests: in a venv of its own (eventlet
stays out of shelf's), SQLite backend, bootstrapped by keystone-manage, served by gunicorn
on 127.0.0.1. The venv is made once and kept ($SHELF_TEST_KEYSTONE_VENV, else
~/.cache/shelf-tests/keystone-30.0.0); making it takes one to three minutes here."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

KEYSTONE = "keystone==30.0.0"
ADMIN_PASSWORD = "keystone-admin-pass"
VENV = Path(os.environ.get("SHELF_TEST_KEYSTONE_VENV")
            or Path.home() / ".cache" / "shelf-tests" / "keystone-30.0.0")
# oslo.config would read gunicorn's own arguments as keystone's: clear them first.
WSGI_WRAPPER = """import sys
sys.argv = sys.argv[:1]
from keystone.server.wsgi import initialize_public_application
application = initialize_public_application()
"""


def keystone_venv() -> Path:
    ready = VENV / ".installed"
    if not ready.exists():
        subprocess.run(["python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", KEYSTONE, "gunicorn"],
                       check=True, timeout=900)
        ready.touch()
    return VENV


@dataclass
class Keystone:
    url: str  # http://127.0.0.1:PORT (its /v3 is the auth_url)
    admin_token: str

    def call(self, method: str, path: str, **body: Any) -> Any:
        answer = httpx.request(method, f"{self.url}/v3{path}", json=body or None,
                               headers={"X-Auth-Token": self.admin_token}, timeout=30)
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    def find(self, kind: str, name: str) -> str:
        found = self.call("GET", f"/{kind}?name={name}")[kind]
        assert found, f"no {kind} named {name}"
        identifier: str = found[0]["id"]
        return identifier

    def user_with_role(self, name: str, password: str, project: str, role: str) -> None:
        try:
            project_id = self.find("projects", project)
        except AssertionError:
            project_id = self.call("POST", "/projects", project={
                "name": project, "domain_id": "default"})["project"]["id"]
        user_id = self.call("POST", "/users", user={
            "name": name, "password": password, "domain_id": "default"})["user"]["id"]
        role_id = self.find("roles", role)
        self.call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")

    def register_shelf(self, base: str) -> None:
        """What the README tells an operator to create: compute and image endpoints."""
        for service in self.call("GET", "/services")["services"]:
            if service["type"] in ("compute", "image"):
                self.call("DELETE", f"/services/{service['id']}")
        for kind, name, url in (("compute", "nova", f"{base}/v2.1"),
                                ("image", "glance", f"{base}/image")):
            service_id = self.call("POST", "/services", service={
                "type": kind, "name": name})["service"]["id"]
            self.call("POST", "/endpoints", endpoint={
                "service_id": service_id, "interface": "public", "region_id": "RegionOne",
                "url": url})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _configure(directory: Path, venv: Path, url: str) -> dict[str, str]:
    (directory / "keystone.conf").write_text(
        f"[DEFAULT]\nlog_file = {directory}/keystone.log\n"
        f"[database]\nconnection = sqlite:///{directory}/keystone.db\n"
        "[token]\nprovider = fernet\n"
        f"[fernet_tokens]\nkey_repository = {directory}/fernet-keys\n"
        f"[fernet_receipts]\nkey_repository = {directory}/fernet-keys\n"
        f"[credential]\nkey_repository = {directory}/credential-keys\n")
    (directory / "keystone_wsgi.py").write_text(WSGI_WRAPPER)
    env = {**os.environ, "OS_KEYSTONE_CONFIG_DIR": str(directory)}
    manage = [str(venv / "bin" / "keystone-manage"), "--config-file",
              str(directory / "keystone.conf")]
    owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    for argv in (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner],
                 ["bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                  "--bootstrap-public-url", f"{url}/v3", "--bootstrap-region-id",
                  "RegionOne"]):
        subprocess.run([*manage, *argv], env=env, check=True, capture_output=True,
                       timeout=300)
    return env


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    venv = keystone_venv()
    directory = tmp_path_factory.mktemp("keystone")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = _configure(directory, venv, url)
    with (directory / "gunicorn.log").open("w") as log:
        server = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "--chdir", str(directory), "-b",
             f"127.0.0.1:{port}", "-w", "2", "keystone_wsgi:application"],
            env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield Keystone(url, _admin_token(url))
        finally:
            server.terminate()
            server.wait(timeout=30)


def _admin_token(url: str) -> str:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = httpx.post(f"{url}/v3/auth/tokens", json=body, timeout=30)
            if answer.status_code == 201:
                return answer.headers["X-Subject-Token"]
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "keystone did not start"
        time.sleep(0.5)
