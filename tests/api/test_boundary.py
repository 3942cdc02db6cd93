"""The API is held to the same boundary checks as the CLI (application/validation.py), and
os-getConsoleOutput answers from the console log the host keeps."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

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


def test_a_body_is_json_whatever_its_type_says_unless_it_names_another(
        cloud: tuple[Any, Api]) -> None:
    """Nova reads a body as JSON when its Content-Type is JSON, text/plain or absent, and
    answers 415 for any other type, recording nothing."""
    h, api = cloud
    server_id = boot(api)
    body = b'{"os-stop": null}'
    with api.client() as alice:
        xml = alice.post(f"/v2.1/servers/{server_id}/action", content=body,
                         headers={"Content-Type": "application/xml"})
        assert xml.status_code == 415, xml.text
        assert xml.json() == {"badMediaType": {"code": 415,
                                               "message": "Unsupported Content-Type"}}
        assert h.show(server_id)["task_state"] is None
        plain = alice.post(f"/v2.1/servers/{server_id}/action", content=body,
                           headers={"Content-Type": "text/plain"})
        assert plain.status_code == 202, plain.text
        # no body, no type to judge; and Glance's paths are not Nova's
        for path in (f"/v2.1/servers/{server_id}", "/image/v2/images"):
            typed = alice.get(path, headers={"Content-Type": "application/xml"})
            assert typed.status_code == 200, (path, typed.text)


def test_glance_pages_images_by_limit_and_marker(cloud: tuple[Any, Api],
                                                 tmp_path: Path) -> None:
    h, api = cloud
    disk = tmp_path / "second.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    h.ok("image", "import", "second", str(disk))
    with api.client() as alice:
        every = alice.get("/image/v2/images").json()["images"]
        assert len(every) == 2 and "next" not in alice.get("/image/v2/images").json()
        first = alice.get("/image/v2/images", params={"limit": 1, "member_status": "all"}
                          ).json()
        assert "member_status=all" in first["next"]  # the next page keeps the filters
        assert [i["id"] for i in first["images"]] == [every[0]["id"]]
        rest = alice.get(first["next"].replace("/v2/", "/image/v2/", 1)).json()
        assert [i["id"] for i in rest["images"]] == [every[1]["id"]] and "next" not in rest
        for limit in ("-1", "x"):
            assert alice.get("/image/v2/images", params={"limit": limit}).status_code == 400
        unknown = alice.get("/image/v2/images", params={"marker": "no-such-image"})
        assert unknown.status_code == 400


def test_an_admin_lists_deleted_servers_with_deleted_true(cloud: tuple[Any, Api]) -> None:
    _, api = cloud
    gone, kept = boot(api, "gone"), boot(api, "kept")
    with api.client() as alice:
        assert alice.delete(f"/v2.1/servers/{gone}").status_code == 204
        deadline = time.monotonic() + 60
        while alice.get(f"/v2.1/servers/{gone}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # a filter only admins may use is dropped for others, as Nova drops it
        mine = alice.get("/v2.1/servers/detail", params={"deleted": "true"}).json()
        assert [s["id"] for s in mine["servers"]] == [kept]
    with api.client("admin:admin") as admin:
        listed = admin.get("/v2.1/servers/detail",
                           params={"deleted": "true", "all_tenants": "1"}).json()["servers"]
        assert [(s["id"], s["status"]) for s in listed] == [(gone, "DELETED")]
        live = admin.get("/v2.1/servers",
                         params={"deleted": "false", "all_tenants": "1"}).json()["servers"]
        assert [s["id"] for s in live] == [kept]


def test_host_status_and_hypervisor_state_follow_the_serve(cloud: tuple[Any, Api]) -> None:
    """A host is up while some `serve` performs its steps (holds its lease), as Nova's
    compute service is up while it reports; host_status from 2.16, to admins only."""
    h, api = cloud
    server_id = boot(api)
    with api.client("admin:admin", version="2.16") as admin:
        shown = admin.get(f"/v2.1/servers/{server_id}").json()["server"]
        assert shown["host_status"] == "UP"
        listed = admin.get("/v2.1/servers/detail", params={"all_tenants": "1"}).json()
        assert [s["host_status"] for s in listed["servers"]] == ["UP"]
        assert {x["state"] for x in admin.get("/v2.1/os-hypervisors").json()[
            "hypervisors"]} == {"up"}
        with api.client(version="2.16") as alice:
            assert "host_status" not in alice.get(f"/v2.1/servers/{server_id}").json()[
                "server"]
        h.stop_worker()
        try:
            shown = admin.get(f"/v2.1/servers/{server_id}").json()["server"]
            assert shown["host_status"] == "DOWN"
            assert {x["state"] for x in admin.get("/v2.1/os-hypervisors").json()[
                "hypervisors"]} == {"down"}
        finally:
            h.start_worker()
    with api.client("admin:admin", version="2.15") as older:
        assert "host_status" not in older.get(f"/v2.1/servers/{server_id}").json()["server"]


def test_reads_survive_the_database_dropping_the_apis_connections(
        cloud: tuple[Any, Api]) -> None:
    """A PostgreSQL restart or an idle timeout ends the API's sessions: the next reads are
    made again on new connections (never a 500), host_status included."""
    h, api = cloud
    if not h.store.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    server_id = boot(api)
    with api.client("admin:admin", version="2.16") as admin:
        assert admin.get(f"/v2.1/servers/{server_id}").status_code == 200
        with psycopg.connect(h.store, autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert ended is not None and ended[0] > 0
        for _ in range(3):  # a projection read first, then the lease look
            listed = admin.get("/v2.1/os-hypervisors")
            assert listed.status_code == 200, listed.text
            shown = admin.get(f"/v2.1/servers/{server_id}")
            assert shown.status_code == 200, shown.text
            assert shown.json()["server"]["host_status"] in ("UP", "DOWN", "UNKNOWN")
