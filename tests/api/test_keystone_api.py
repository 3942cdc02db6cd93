"""`--auth keystone`: a real Keystone (tests/api/keystone_support.py) issues the tokens;
the real client logs in there, finds shelf in Keystone's catalog, and shelf takes the
user, project and roles from Keystone's validation of each token."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.process_manager import Settings
from tests.api.conftest import Api
from tests.api.identity_support import (
    boot_shelve_unshelve,
    password_cloud,
    start_identity_api,
    stop_identity_api,
)
from tests.api.keystone_support import Keystone, keystone  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
PASSWORD = "keystone-user-pass"


@pytest.fixture
def site(keystone: Keystone, harness_factory: Any,  # noqa: F811
         tmp_path: Path) -> Iterator[tuple[Any, Api, dict[str, str]]]:
    """shelf behind the Keystone, with a member, a reader and a member of another project
    (names of their own per test: the Keystone lives for the session)."""
    harness = harness_factory(Settings(shelved_offload_time=0, shutdown_timeout=1))
    harness.add_host("h1")
    disk = tmp_path / "cirros.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    harness.ok("image", "import", "cirros", str(disk))
    api = start_identity_api(harness.store, tmp_path, "keystone", keystone_url=keystone.url,
                             keystone_cache=0.5)
    keystone.register_shelf(api.url)
    suffix = uuid.uuid4().hex[:6]
    names = {"member": f"kalice-{suffix}", "reader": f"kcarol-{suffix}",
             "other": f"kbob-{suffix}", "project": f"kweb-{suffix}"}
    keystone.user_with_role(names["member"], PASSWORD, names["project"], "member")
    keystone.user_with_role(names["reader"], PASSWORD, names["project"], "reader")
    keystone.user_with_role(names["other"], PASSWORD, f"kother-{suffix}", "member")
    lines = ["clouds:"]
    for cloud in ("member", "reader", "other"):
        project = names["project"] if cloud != "other" else f"kother-{suffix}"
        lines += password_cloud(cloud, f"{keystone.url}/v3", names[cloud], PASSWORD, project)
    lines += password_cloud("admin", f"{keystone.url}/v3", "admin", "keystone-admin-pass",
                            "admin")
    (tmp_path / "clouds.yaml").write_text("\n".join(lines) + "\n")
    yield harness, api, names
    stop_identity_api(api)


def test_the_client_through_keystone(site: tuple[Any, Api, dict[str, str]]) -> None:
    h, api, names = site
    assert [i["Name"] for i in api.openstack_json("member", "image", "list")] == ["cirros"]
    server_id = boot_shelve_unshelve(api, "admin", "member")
    recorded = h.ok("actions", server_id, "--json").json()
    assert {a["user"] for a in recorded} == {names["member"]}
    # roles come from Keystone: a reader lists but can't act; another project sees nothing
    assert [s["Name"] for s in api.openstack_json("reader", "server", "list")] == ["web1"]
    refused = api.openstack("reader", "server", "shelve", "web1", check=False)
    assert refused.returncode != 0 and "403" in refused.stderr
    assert api.openstack_json("other", "server", "list") == []


def test_keystone_tokens(keystone: Keystone,  # noqa: F811
                         site: tuple[Any, Api, dict[str, str]]) -> None:
    _, api, names = site
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": names["member"], "domain": {"id": "default"}, "password": PASSWORD}}},
        "scope": {"project": {"name": names["project"], "domain": {"id": "default"}}}}}
    token = httpx.post(f"{keystone.url}/v3/auth/tokens", json=body,
                       timeout=30).headers["X-Subject-Token"]
    images = f"{api.url}/image/v2/images"
    assert httpx.get(images, headers={"X-Auth-Token": token}).status_code == 200
    assert httpx.get(images, headers={"X-Auth-Token": token[:-2] + "xx"}).status_code == 401
    assert httpx.get(images, headers={"X-Auth-Token": "alice:web"}).status_code == 401
    gone = httpx.delete(f"{keystone.url}/v3/auth/tokens", timeout=30,
                        headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert gone.status_code == 204
    deadline = time.monotonic() + 30  # the validation cache (0.5 s here) bounds it
    while httpx.get(images, headers={"X-Auth-Token": token}).status_code != 401:
        assert time.monotonic() < deadline
        time.sleep(0.2)
