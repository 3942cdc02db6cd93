"""`--auth standalone` with the real `openstack` client: logins by password and by
application credential through a stock clouds.yaml, a shelve and unshelve recorded under
the verified user, and every way a token can be bad answered 401."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from application.auth.tokens import TokenCodec
from domain.process_manager import Settings
from tests.api.conftest import Api
from tests.api.identity_support import (
    PASSWORDS,
    all_text_of_the_store,
    boot_shelve_unshelve,
    login,
    recorded,
    standalone_clouds,
    start_identity_api,
    stop_identity_api,
)


@pytest.fixture
def cloud(harness_factory: Any, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Api]]:
    harness = harness_factory(Settings(shelved_offload_time=0, shutdown_timeout=1))
    harness.add_host("h1")
    disk = tmp_path / "cirros.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    harness.ok("image", "import", "cirros", str(disk))
    for name, (project, role) in {"alice": ("web", "member"), "bob": ("other", "member"),
                                  "root": ("admin", "admin")}.items():
        monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORDS[name] + "\n"))
        harness.ok("user", "create", name, "--project", project, "--role", role,
                   "--password-stdin")
    api = start_identity_api(harness.store, tmp_path, "standalone")
    credential = harness.ok("user", "credential", "create", "alice", "--json").json()
    (tmp_path / "credential.json").write_text(json.dumps(credential))
    (tmp_path / "clouds.yaml").write_text(standalone_clouds(api.url, credential))
    yield harness, api
    stop_identity_api(api)


def test_the_client_logs_in_and_events_carry_the_verified_user(
        cloud: tuple[Any, Api]) -> None:
    h, api = cloud
    server_id = boot_shelve_unshelve(api, "root", "alice", unshelver="alice-credential")
    shown = api.openstack_json("alice-credential", "server", "show", "web1")
    assert (shown["status"], shown["project_id"]) == ("ACTIVE", "web")
    recorded = h.ok("actions", server_id, "--json").json()
    assert {(a["action"], a["user"]) for a in recorded} == {
        ("create", "alice"), ("shelve", "alice"), ("unshelve", "alice")}
    booted = h.ok("history", server_id, "--json").json()[0]
    user_id = api.openstack_json("alice", "token", "issue")["user_id"]
    assert (booted["user"], booted["project_id"], booted["user_id"]) == (
        "alice", "web", user_id)
    assert {a["user"] for a in h.ok("audit", "--format", "json").json()} == {"alice"}
    # bob, of another project, can't see it
    assert api.openstack_json("bob", "server", "list") == []
    missing = api.openstack("bob", "server", "show", server_id, check=False)
    assert missing.returncode != 0 and "No Server found" in missing.stderr
    token = login(api.url, "bob", "other")
    answer = httpx.get(f"{api.url}/v2.1/servers/{server_id}",
                       headers={"X-Auth-Token": token})
    assert answer.status_code == 404


def test_tokens(cloud: tuple[Any, Api]) -> None:
    h, api = cloud
    answer = httpx.post(f"{api.url}/identity/v3/auth/tokens", json=_password_body(
        "alice", PASSWORDS["alice"], "web"))
    assert answer.status_code == 201
    body = answer.json()["token"]
    assert (body["user"]["name"], body["project"]["name"]) == ("alice", "web")
    assert sorted(r["name"] for r in body["roles"]) == ["member", "reader"]
    services = {s["type"]: s["endpoints"][0] for s in body["catalog"]}
    assert services["compute"]["url"] == f"{api.url}/v2.1"
    assert services["image"]["url"] == f"{api.url}/image"
    assert services["compute"]["region"] == "RegionOne"
    token = answer.headers["X-Subject-Token"]
    servers = f"{api.url}/v2.1/servers"
    assert httpx.get(servers, headers={"X-Auth-Token": token}).status_code == 200
    checked = httpx.get(f"{api.url}/identity/v3/auth/tokens",
                        headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert checked.status_code == 200 and checked.json()["token"]["user"]["name"] == "alice"
    # tampered
    tampered = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert httpx.get(servers, headers={"X-Auth-Token": tampered}).status_code == 401
    # revoked
    gone = httpx.delete(f"{api.url}/identity/v3/auth/tokens",
                        headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert gone.status_code == 204
    refused = httpx.get(servers, headers={"X-Auth-Token": token})
    assert refused.status_code == 401
    # expired: a token the API's own keys signed two hours ago
    codec: TokenCodec = api.server.config.app.state.identity.auth.codec
    old = codec.issue(codec.check(login(api.url, "alice", "web")).identity,
                      now=codec.check(login(api.url, "alice", "web")).issued_at
                      - timedelta(hours=2))
    assert httpx.get(servers, headers={"X-Auth-Token": old.text}).status_code == 401
    # a deleted user's token (the deletion made by the CLI, another process)
    bobs = login(api.url, "bob", "other")
    h.ok("user", "delete", "bob")
    deadline = time.monotonic() + 30  # the revocation list's refresh interval bounds it
    while httpx.get(servers, headers={"X-Auth-Token": bobs}).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("name,password,project", [
    ("alice", "wrong password", "web"), ("nobody", PASSWORDS["alice"], "web"),
    ("alice", PASSWORDS["alice"], "other"), ("bob", PASSWORDS["alice"], "other")])
def test_failed_logins_say_nothing_and_are_recorded(
        cloud: tuple[Any, Api], name: str, password: str, project: str) -> None:
    h, api = cloud
    answer = httpx.post(f"{api.url}/identity/v3/auth/tokens",
                        json=_password_body(name, password, project))
    assert answer.status_code == 401
    assert answer.json() == {"error": {
        "code": 401, "message": "The request you have made requires authentication.",
        "title": "Unauthorized"}}
    failures = recorded(h, ".LoginFailed")
    assert [(f["name"], f["remote"], f["method"]) for f in failures] == [
        (name, "127.0.0.1", "password")]
    assert "at" in failures[0]
    assert password not in all_text_of_the_store(h)


def test_the_wrong_password_fails_with_the_client(cloud: tuple[Any, Api]) -> None:
    _, api = cloud
    refused = api.openstack("wrong", "server", "list", check=False)
    assert refused.returncode != 0 and "401" in refused.stderr


def test_no_secret_in_logs_events_or_projections(
        cloud: tuple[Any, Api], capfd: pytest.CaptureFixture[str]) -> None:
    h, api = cloud
    credential = json.loads((api.tmp / "credential.json").read_text())
    api.openstack("alice", "server", "list")
    api.openstack("alice-credential", "server", "list")
    api.openstack("wrong", "server", "list", check=False)
    h.ok("audit", "--format", "json")  # the projections, caught up
    logs = capfd.readouterr()
    stored = all_text_of_the_store(h)
    for secret in [*PASSWORDS.values(), credential["secret"], "not-alices-password"]:
        assert secret not in stored
        assert secret not in logs.out + logs.err


def _password_body(name: str, password: str, project: str) -> dict[str, Any]:
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": name, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b'{"auth": {}}', b'{"auth": {"identity": {"methods": []}}}',
    b'{"auth": {"identity": {"methods": ["totp"], "totp": {}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": 5}}}}}',
    b'{"auth": {"identity": {"methods": ["password"], "password": {}}, "scope": "system"}}',
])
def test_malformed_logins_are_400_with_keystones_body(cloud: tuple[Any, Api],
                                                      body: bytes) -> None:
    _, api = cloud
    answer = httpx.post(f"{api.url}/identity/v3/auth/tokens", content=body,
                        headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert set(answer.json()["error"]) == {"code", "message", "title"}


def test_a_stock_client_reads_the_identity_documents(cloud: tuple[Any, Api]) -> None:
    _, api = cloud
    version = httpx.get(f"{api.url}/identity/v3").json()["version"]
    assert (version["id"], version["links"][0]["href"]) == (
        "v3.14", f"{api.url}/identity/v3/")
    assert httpx.get(f"{api.url}/identity").json()["versions"]["values"][0]["id"] == "v3.14"
    shown = api.openstack_json("alice", "token", "issue")
    assert shown["project_id"] == "web"
    by_credential = api.openstack_json("alice-credential", "token", "issue")
    assert (by_credential["project_id"], by_credential["user_id"]) == (
        "web", shown["user_id"])
    images = f"{api.url}/image/v2/images"
    assert httpx.get(images, headers={"X-Auth-Token": shown["id"]}).status_code == 200
    api.openstack("alice", "token", "revoke", shown["id"])
    assert httpx.get(images, headers={"X-Auth-Token": shown["id"]}).status_code == 401
