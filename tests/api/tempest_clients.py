"""tempest's own service clients (tempest from PyPI, as a library) pointed at the API with
a fixed noauth token: each validates every response against tempest's published JSON
schema for the microversion it sends, and raises on a missing or an extra key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tempest.lib import auth
from tempest.lib.services.compute import (
    flavors_client,
    hypervisor_client,
    servers_client,
    versions_client,
)


class FixedTokenAuth(auth.AuthProvider):  # type: ignore[misc]
    """No Keystone: a fixed token and endpoint (noauth's `user:project`)."""

    def __init__(self, endpoint: str, token: str) -> None:  # no credentials to check
        self.endpoint, self.token = endpoint, token
        self.credentials = None
        self._scope, self.cache, self.alt_auth_data, self.alt_part = "project", None, None, None

    def _decorate_request(self, filters: Any, method: str, url: str, headers: Any = None,
                          body: Any = None, auth_data: Any = None) -> tuple[str, Any, Any]:
        headers = dict(headers or {})
        headers["X-Auth-Token"] = self.token
        return f"{self.endpoint}/{url}", headers, body

    def auth_request(self, method: str, url: str, headers: Any = None, body: Any = None,
                     filters: Any = None) -> tuple[str, Any, Any]:
        return self._decorate_request(filters, method, url, headers, body)

    def _get_auth(self) -> tuple[str, dict[str, Any]]:
        return self.token, {}

    def _fill_credentials(self, auth_data_body: Any) -> None:
        return None

    def is_expired(self, auth_data: Any) -> bool:
        return False

    def base_url(self, filters: Any, auth_data: Any = None) -> str:
        return self.endpoint

    def get_token(self) -> str:
        return self.token


@dataclass
class Tempest:
    servers: servers_client.ServersClient
    flavors: flavors_client.FlavorsClient
    hypervisors: hypervisor_client.HypervisorClient
    versions: versions_client.VersionsClient


def tempest_clients(url: str, token: str) -> Tempest:
    provider = FixedTokenAuth(f"{url}/v2.1", token)
    args = (provider, "compute", "RegionOne")
    # shelf sets no guest password: as Nova with enable_instance_password = False
    servers = servers_client.ServersClient(*args, enable_instance_password=False)
    return Tempest(servers, flavors_client.FlavorsClient(*args),
                   hypervisor_client.HypervisorClient(*args),
                   versions_client.VersionsClient(*args))
