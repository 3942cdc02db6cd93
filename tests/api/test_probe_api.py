"""A hostile client's findings: each request here was once accepted when Nova refuses it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Api, start_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    served = start_api(f"sqlite:///{tmp_path / 'shelf.db'}", tmp_path)
    yield served
    served.stop()
    served.server.config.app.state.contexts.close()


def _flavor(name: str, **extra: object) -> dict[str, object]:
    return {"flavor": {"name": name, "vcpus": 1, "ram": 64, "disk": 1, **extra}}


@pytest.mark.parametrize("body", [
    _flavor("slash", id="a/b"),  # was created, then no URL could show or delete it
    _flavor("dots", id="../../etc"),
    _flavor("space", id=" lead"),
    _flavor("nul\x00"),  # Nova's name pattern refuses control characters
    _flavor("line\nbreak"),
    _flavor(" padded "),
    _flavor("boolean", vcpus=True),  # JSON Schema's integer is not a boolean
    _flavor("boolean-disk", disk=False),
])
def test_a_flavor_id_or_name_nova_refuses_is_400_and_records_nothing(
        api: Api, body: dict[str, object]) -> None:
    with api.client("admin:admin") as admin:
        answer = admin.post("/v2.1/flavors", json=body)
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"badRequest"}
        assert admin.get("/v2.1/flavors").json()["flavors"] == []


def test_a_negative_flavor_limit_is_400(api: Api) -> None:
    with api.client() as alice:
        answer = alice.get("/v2.1/flavors", params={"limit": -1})
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == {"badRequest"}
