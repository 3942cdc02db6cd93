"""Standalone identity on both stores: `shelf user …`, logins, revocation, and no secret
anywhere in the store."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.eventstore import EventStoreRepository, open_application, parse_store_url
from application.auth.login import Authenticator, LoginFailed
from application.auth.setup import standalone_authenticator
from application.auth.tokens import TokenInvalid

PASSWORD = "correct horse battery"


def with_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


@pytest.fixture
def h(harness_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    harness = harness_factory(start=False)
    with_stdin(monkeypatch, PASSWORD + "\n")
    harness.ok("user", "create", "alice", "--project", "web", "--role", "member",
               "--password-stdin")
    return harness


@pytest.fixture
def auth(h: Any, tmp_path: Path) -> Any:
    app = open_application(parse_store_url(h.store))
    authenticator = standalone_authenticator(
        EventStoreRepository(app, parse_store_url(h.store)), tmp_path / "keys")
    yield authenticator
    app.close()


def users(h: Any) -> dict[str, dict[str, Any]]:
    return {user["name"]: user for user in h.ok("user", "list", "--json").json()}


def stored_text(h: Any) -> str:
    """Every stored event and snapshot, as the store holds them."""
    app = open_application(parse_store_url(h.store))
    try:
        rows = app.recorder.select_notifications(start=1, limit=100_000)
        snapshots = []
        if app.snapshots is not None:
            for row in rows:
                snapshots += [s.state for s in app.snapshots.recorder.select_events(
                    row.originator_id)]
        return "\n".join(bytes(row.state).decode() for row in [*rows]) + "\n".join(
            bytes(state).decode() for state in snapshots)
    finally:
        app.close()


def test_user_commands(h: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = users(h)["alice"]
    assert (alice["project"], alice["roles"]) == ("web", ["member"])
    assert alice["effective_roles"] == ["member", "reader"]
    h.ok("user", "grant", "alice", "--role", "admin")
    assert users(h)["alice"]["effective_roles"] == ["admin", "member", "reader"]
    h.ok("user", "revoke", "alice", "--role", "admin")
    assert h.shelf("user", "revoke", "alice", "--role", "admin").code == 4
    with_stdin(monkeypatch, PASSWORD + "\n")
    taken = h.shelf("user", "create", "alice", "--project", "x", "--role", "reader",
                    "--password-stdin")
    assert (taken.code, taken.err) == (4, "shelf: a user named 'alice' exists\n")
    with_stdin(monkeypatch, "short\n")
    weak = h.shelf("user", "set-password", "alice", "--password-stdin")
    assert weak.code == 2 and weak.err.count("\n") == 1
    assert h.shelf("user", "delete", "nobody").code == 3
    made = h.ok("user", "credential", "create", "alice", "--name", "ci", "--json").json()
    assert users(h)["alice"]["credentials"] == ["ci"]
    assert h.ok("user", "credential", "delete", "alice", "ci").out.strip() == made["id"]
    h.ok("user", "delete", "alice")
    assert users(h) == {}
    with_stdin(monkeypatch, PASSWORD + "\n")  # the name is free again: a new user
    h.ok("user", "create", "alice", "--project", "web", "--role", "reader",
         "--password-stdin")
    assert users(h)["alice"]["id"] != alice["id"]


def test_password_login_and_failures(h: Any, auth: Authenticator) -> None:
    token = auth.login_password("alice", PASSWORD, "web", "127.0.0.1", "req-1")
    assert auth.check(token.text).identity.roles == ("member", "reader")
    for name, password, project in (("alice", "wrong password", "web"),
                                    ("nobody", PASSWORD, "web"),
                                    ("alice", PASSWORD, "other"),
                                    ("alice", "", "web")):
        with pytest.raises(LoginFailed) as failed:
            auth.login_password(name, password, project, "127.0.0.9", "req-2")
        assert str(failed.value) == "The request you have made requires authentication."
    assert auth.login_delay("alice") > 0  # a third failure for alice: slowed from now on
    assert auth.login_delay("bob") == 0
    text = stored_text(h)
    failures = [json.loads(line) for line in text.splitlines() if '"remote"' in line]
    assert len(failures) == 4
    assert {(f["method"], f["remote"]) for f in failures} == {("password", "127.0.0.9")}
    assert PASSWORD not in text and "wrong password" not in text


def test_revocation(h: Any, auth: Authenticator, monkeypatch: pytest.MonkeyPatch) -> None:
    first = auth.login_password("alice", PASSWORD, None, "127.0.0.1", "req-1")
    second = auth.login_password("alice", PASSWORD, None, "127.0.0.1", "req-2")
    auth.revoke(first, "alice", "req-3")
    with pytest.raises(TokenInvalid):
        auth.check(first.text)  # at once in the process that revoked it
    assert auth.check(second.text)
    h.ok("user", "delete", "alice")  # another process: counted at the next refresh
    assert auth.check(second.text)
    auth.revocations.refresh()
    with pytest.raises(TokenInvalid):
        auth.check(second.text)
    with pytest.raises(LoginFailed):
        auth.login_password("alice", PASSWORD, None, "127.0.0.1", "req-4")


def test_application_credentials(h: Any, auth: Authenticator) -> None:
    made = h.ok("user", "credential", "create", "alice", "--json").json()
    token = auth.login_credential(made["id"], made["secret"], None, "127.0.0.1", "req-1")
    identity = auth.check(token.text).identity
    assert (identity.user_name, identity.methods, identity.credential_id) == (
        "alice", ("application_credential",), made["id"])
    with pytest.raises(LoginFailed):
        auth.login_credential(made["id"], made["secret"] + "x", None, "127.0.0.1", "req-2")
    h.ok("user", "credential", "delete", "alice", made["id"])
    auth.revocations.refresh()
    with pytest.raises(TokenInvalid):
        auth.check(token.text)
    with pytest.raises(LoginFailed):
        auth.login_credential(made["id"], made["secret"], None, "127.0.0.1", "req-3")
    assert made["secret"] not in stored_text(h)
