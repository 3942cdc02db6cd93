"""Every response the API gives, at the microversions it claims, validates against
tempest's response schemas (tempest's own clients check them and raise otherwise)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from tempest.lib import exceptions as tempest_errors
from tempest.lib.services.compute import base_compute_client

from tests.api.conftest import Api
from tests.api.tempest_clients import Tempest, tempest_clients

VERSIONS = ("2.1", "2.47", "2.58", "2.75", "2.91", "2.96")


def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def status_is(client: Tempest, server_id: str, status: str) -> Callable[[], bool]:
    return lambda: client.servers.show_server(server_id)["server"]["status"] == status


def gone(client: Tempest, server_id: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            client.servers.show_server(server_id)
        except tempest_errors.NotFound:
            return True
        return False

    return check


def test_responses_match_tempest_schemas(cloud: tuple[Any, Api],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _, api = cloud
    admin, alice = tempest_clients(api.url, "admin:admin"), tempest_clients(api.url,
                                                                            "alice:web")
    admin.versions.list_versions()
    flavor = admin.flavors.create_flavor(name="m1.tiny", ram=512, vcpus=1, disk=1)["flavor"]
    image = next(i for i in api.client().get("/image/v2/images").json()["images"])
    for version in VERSIONS:
        monkeypatch.setattr(base_compute_client, "COMPUTE_MICROVERSION", version)
        for client in (admin, alice):
            client.flavors.list_flavors()
            client.flavors.list_flavors(detail=True)
            client.flavors.show_flavor(flavor["id"])
        admin.hypervisors.list_hypervisors()
        admin.hypervisors.list_hypervisors(detail=True)
        name = f"vm-{version.replace('.', '-')}"
        server_id = alice.servers.create_server(
            name=name, imageRef=image["id"], flavorRef=flavor["id"])["server"]["id"]
        until(status_is(alice, server_id, "ACTIVE"))
        for client in (admin, alice):
            client.servers.show_server(server_id)
            client.servers.list_servers()
            client.servers.list_servers(detail=True, name=name)
        alice.servers.shelve_server(server_id)
        until(status_is(alice, server_id, "SHELVED_OFFLOADED"))
        alice.servers.show_server(server_id)
        alice.servers.unshelve_server(server_id)
        until(status_is(alice, server_id, "ACTIVE"))
        alice.servers.stop_server(server_id)
        until(status_is(alice, server_id, "SHUTOFF"))
        alice.servers.start_server(server_id)
        until(status_is(alice, server_id, "ACTIVE"))
        for client in (admin, alice):
            actions = client.servers.list_instance_actions(server_id)["instanceActions"]
            for action in actions:
                client.servers.show_instance_action(server_id, action["request_id"])
        alice.servers.delete_server(server_id)
        until(gone(alice, server_id))
