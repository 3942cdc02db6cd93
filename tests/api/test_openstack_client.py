"""The real `openstack` client (python-openstackclient 10.5.0, openstacksdk 4.22.0) drives
the API against a running worker on libvirt's test driver, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.api.conftest import Api


def wait_for_status(api: Api, cloud: str, server: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        shown: dict[str, Any] = api.openstack_json(cloud, "server", "show", server)
        if shown["status"] == status or time.monotonic() > deadline:
            assert shown["status"] == status, shown
            return shown
        time.sleep(0.2)


def test_the_client_drives_a_whole_lifecycle(cloud: tuple[Any, Api]) -> None:
    h, api = cloud
    flavor = api.openstack_json("admin", "flavor", "create", "--vcpus", "1", "--ram", "512",
                                "--disk", "1", "m1.tiny")
    assert (flavor["name"], flavor["vcpus"], flavor["ram"]) == ("m1.tiny", 1, 512)
    assert [i["Name"] for i in api.openstack_json("alice", "image", "list")] == ["cirros"]

    created = api.openstack_json("alice", "server", "create", "--flavor", "m1.tiny",
                                 "--image", "cirros", "--wait", "web1")
    assert created["status"] == "ACTIVE"
    server_id = created["id"]
    listed = api.openstack_json("alice", "server", "list")
    assert [(s["ID"], s["Name"], s["Status"]) for s in listed] == [
        (server_id, "web1", "ACTIVE")]
    shown = api.openstack_json("alice", "server", "show", "web1")
    assert (shown["id"], shown["project_id"], shown["user_id"]) == (server_id, "web", "alice")
    assert "m1.tiny" in json.dumps(shown["flavor"])

    api.openstack("alice", "server", "shelve", "--wait", "web1")
    assert api.openstack_json("alice", "server", "show", "web1")["status"] == \
        "SHELVED_OFFLOADED"
    images = {i["Name"]: i for i in api.openstack_json("alice", "image", "list")}
    assert "web1-shelved" in images
    shelved = api.openstack_json("alice", "image", "show", "web1-shelved")
    assert shelved["properties"]["image_type"] == "snapshot"
    assert shelved["properties"]["instance_uuid"] == server_id
    assert "web1-shelved" not in {i["Name"] for i in api.openstack_json("bob", "image", "list")}

    api.openstack("alice", "server", "unshelve", "--wait", "web1")
    assert api.openstack_json("alice", "server", "show", "web1")["status"] == "ACTIVE"

    api.openstack("alice", "server", "shelve", "--wait", "web1")
    api.openstack("admin", "server", "unshelve", "--host", "h2", "--wait", server_id,
                  version="2.91")
    as_admin = api.openstack_json("admin", "server", "show", server_id)
    assert (as_admin["status"], as_admin["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", "h2")

    api.openstack("alice", "server", "stop", "web1")
    wait_for_status(api, "alice", "web1", "SHUTOFF")
    api.openstack("alice", "server", "start", "web1")
    wait_for_status(api, "alice", "web1", "ACTIVE")

    refused = api.openstack("alice", "server", "start", "web1", check=False)
    assert refused.returncode != 0
    assert "Cannot 'start' instance" in refused.stderr and "409" in refused.stderr

    events = api.openstack_json("alice", "server", "event", "list", "web1")
    recorded = h.ok("actions", server_id, "--json").json()
    assert sorted(e["Request ID"] for e in events) == sorted(a["request_id"]
                                                             for a in recorded)
    # serve offloads at once (its default): the offload is part of the shelve action
    assert [e["Action"] for e in reversed(events)] == [
        "create", "shelve", "unshelve", "shelve", "unshelve", "stop", "start"]
    unshelve = next(a for a in recorded if a["action"] == "unshelve")
    detail = api.openstack_json("admin", "server", "event", "show", server_id,
                                unshelve["request_id"])
    assert detail["request_id"] == unshelve["request_id"]
    assert [e["event"] for e in detail["events"]] == [e["event"] for e in unshelve["events"]]

    api.openstack("alice", "server", "delete", "--wait", "web1")
    assert api.openstack_json("alice", "server", "list") == []
    records = h.ok("history", server_id, "--json").json()
    assert (records[0]["user_id"], records[0]["project_id"]) == ("alice", "web")
    requested = [r for r in records if r["event"].endswith("Requested")]
    assert {r["user"] for r in requested} == {"alice", "admin"}  # admin: unshelve --host
