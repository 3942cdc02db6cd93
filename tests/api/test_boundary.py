"""The API is held to the same boundary checks as the CLI (application/validation.py), and
os-getConsoleOutput answers from the console log the host keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.consoles import console_log_path
from tests.api.conftest import Api
from tests.api.test_policy import FLAVOR, boot


def _server_count(h: Any) -> int:
    return len(h.ok("list", "--json").json())


def test_a_bad_name_or_size_is_400_and_records_nothing(cloud: tuple[Any, Api]) -> None:
    h, api = cloud
    with api.client("admin:admin") as admin:
        assert admin.post("/v2.1/flavors", json=FLAVOR).status_code == 200
        flavor = admin.get("/v2.1/flavors").json()["flavors"][0]["id"]
    before = _server_count(h)
    with api.client() as alice:
        for name in ("../../etc", "a/b", "x" * 300, "-leading-dash"):
            answer = alice.post("/v2.1/servers", json={"server": {
                "name": name, "flavorRef": flavor, "imageRef": ""}})
            assert answer.status_code == 400, (name, answer.text)
            assert set(answer.json()) == {"badRequest"}
    assert _server_count(h) == before


def test_console_output_is_the_hosts_console_log(cloud: tuple[Any, Api],
                                                 tmp_path: Path) -> None:
    h, api = cloud
    server_id = boot(api)
    host = h.show(server_id)["host"]
    # libvirt's test driver runs no guest, so nothing writes the serial log: the test
    # writes what qemu would, where the host keeps it (tests/e2e/test_real_guest.py reads
    # a real guest's).
    log = console_log_path(tmp_path / "data", host, server_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("shelf-guest: boot 1\nshelf-guest: bound 10.0.0.5\nlogin:\n")
    with api.client() as alice:
        answer = alice.post(f"/v2.1/servers/{server_id}/action",
                            json={"os-getConsoleOutput": {"length": 2}})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"output": "shelf-guest: bound 10.0.0.5\nlogin:"}
        whole = alice.post(f"/v2.1/servers/{server_id}/action",
                           json={"os-getConsoleOutput": {}})
        assert whole.json()["output"].startswith("shelf-guest: boot 1\n")


def test_a_body_over_novas_limit_is_413_before_it_is_read(cloud: tuple[Any, Api]) -> None:
    h, api = cloud
    before = _server_count(h)
    huge = {"server": {"name": "big", "flavorRef": "1", "metadata": {"k": "x" * 200_000}}}
    with api.client() as alice:
        answer = alice.post("/v2.1/servers", json=huge)
        assert answer.status_code == 413
        assert answer.json() == {"overLimit": {"code": 413, "message": "Request is too large."}}

        def chunks() -> Any:  # no Content-Length: counted as it arrives
            yield b'{"server": {"name": "big", "metadata": {"k": "'
            for _ in range(30):
                yield b"x" * 8192
            yield b'"}}}'

        chunked = alice.post("/v2.1/servers", content=chunks(),
                             headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
    assert _server_count(h) == before
