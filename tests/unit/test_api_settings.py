"""`shelf api`'s options: noauth only on loopback, strategies not there yet refused with one
line and exit 2, a bad --listen a usage error; noauth's identity rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.errors import ApiError
from api.identity import NoAuth
from api.serving import ApiSettings, build_app, is_loopback
from cli.main import main
from domain.errors import UsageError


@pytest.mark.parametrize("listen", ["0.0.0.0:8774", "192.0.2.1:8774", "example.org:80"])
def test_noauth_refuses_to_listen_beyond_loopback(listen: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="only on loopback"):
        build_app(ApiSettings(listen=listen, store_url=f"sqlite:///{tmp_path}/s.db",
                              auth="noauth"))


def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "host"))


def test_cli_refuses_what_is_not_there(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    assert main(["--store", store, "api"]) == 3  # no such store: `api` makes none
    capsys.readouterr()
    assert main(["--store", store, "flavor", "create", "m1", "--vcpus", "1",
                 "--memory-mb", "64", "--disk-gb", "1"]) == 0  # makes the store
    capsys.readouterr()
    assert main(["--store", store, "api", "--auth", "keystone"]) == 2
    assert capsys.readouterr().err.strip() == "shelf: --auth keystone needs --keystone-url URL"
    assert main(["--store", store, "api", "--listen", "nowhere"]) == 2
    assert "--listen must be HOST:PORT" in capsys.readouterr().err
    assert main(["--store", store, "api", "--listen", "0.0.0.0:8774"]) == 2
    assert main(["--store", store, "api", "--policy-file", str(tmp_path / "none")]) == 2


def test_noauth_identity() -> None:
    noauth = NoAuth()
    alice = noauth.authenticate({"x-auth-token": "alice:web"})
    assert (alice.user_name, alice.user_id, alice.project_id) == ("alice", "alice", "web")
    assert alice.roles == {"member", "reader"}
    assert noauth.authenticate({"x-auth-token": "admin:ops"}).roles == {
        "admin", "member", "reader"}
    assert noauth.authenticate({"x-auth-token": "carol:web:reader"}).roles == {"reader"}
    assert noauth.authenticate({"x-auth-token": "carol:web", "x-roles": "reader"}).roles \
        == {"reader"}
    for token in ("", "alice", "alice:", ":web", "a:b:c:d", "al ice:web"):
        with pytest.raises(ApiError) as refused:
            noauth.authenticate({"x-auth-token": token})
        assert refused.value.status == 401
