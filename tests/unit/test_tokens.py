"""Token signing, expiry and key rotation, without the API or a store."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from application.auth.keys import KeyRing
from application.auth.tokens import Identity, TokenCodec, TokenInvalid
from domain.identity import effective_roles

ALICE = Identity("u1", "alice", "web", "web", ("member", "reader"))


def codec(directory: Path, hours: float = 1) -> TokenCodec:
    ring = KeyRing(directory)
    ring.ensure()
    return TokenCodec(ring, timedelta(hours=hours))


def test_a_token_carries_its_identity(tmp_path: Path) -> None:
    tokens = codec(tmp_path / "keys")
    issued = tokens.issue(ALICE)
    checked = tokens.check(issued.text)
    assert checked.identity == ALICE
    assert checked.token_id == issued.token_id
    assert checked.expires_at - checked.issued_at == timedelta(hours=1)
    assert "alice" not in issued.text  # encrypted, not only signed


def test_the_key_is_created_once_and_owner_only(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    ring.ensure()
    ring.ensure()
    [key] = ring.files()
    assert os.stat(key.path).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "keys").st_mode & 0o777 == 0o700


def test_an_expired_token_is_refused(tmp_path: Path) -> None:
    tokens = codec(tmp_path / "keys")
    issued = tokens.issue(ALICE, now=datetime.now(UTC) - timedelta(hours=2))
    with pytest.raises(TokenInvalid, match="expired"):
        tokens.check(issued.text)
    assert tokens.check(issued.text, now=issued.expires_at - timedelta(seconds=1))


@pytest.mark.parametrize("position", [0, 10, 60, -5, -1])
def test_a_tampered_token_is_refused(tmp_path: Path, position: int) -> None:
    tokens = codec(tmp_path / "keys")
    text = tokens.issue(ALICE).text
    flipped = "A" if text[position] != "A" else "B"
    tampered = text[:position] + flipped + text[position + 1:] if position != -1 else (
        text[:-1] + flipped)
    with pytest.raises(TokenInvalid):
        tokens.check(tampered)


@pytest.mark.parametrize("garbage", ["", "alice:web", "é" * 40, "gAAAAA" + "x" * 200])
def test_garbage_is_refused(tmp_path: Path, garbage: str) -> None:
    with pytest.raises(TokenInvalid):
        codec(tmp_path / "keys").check(garbage)


def test_another_sites_key_is_refused(tmp_path: Path) -> None:
    theirs = codec(tmp_path / "theirs").issue(ALICE).text
    with pytest.raises(TokenInvalid):
        codec(tmp_path / "ours").check(theirs)


def test_rotation_keeps_live_tokens_valid(tmp_path: Path) -> None:
    tokens = codec(tmp_path / "keys")
    before = tokens.issue(ALICE)
    new, dropped = tokens.keys.rotate(max_token_lifetime=3600)
    assert dropped == []
    after = tokens.issue(ALICE)
    assert tokens.check(before.text).identity == ALICE  # the old key still verifies
    assert tokens.check(after.text).identity == ALICE
    only_new = TokenCodec(KeyRing(tmp_path / "keys"))
    only_new.keys.files()[1].path.unlink()  # the old key gone: only the new token holds
    assert only_new.check(after.text)
    with pytest.raises(TokenInvalid):
        only_new.check(before.text)
    assert new.exists()


def test_rotation_drops_keys_no_live_token_can_use(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    directory = tmp_path / "keys"
    directory.mkdir()
    hour = 3600 * 10**9
    now = time.time_ns()
    for age in (3, 2):  # replaced 2 h ago, and the one that replaced it
        (directory / f"{now - age * hour}.key").write_bytes(Fernet.generate_key())
    ring = KeyRing(directory)
    new, dropped = ring.rotate(max_token_lifetime=3600)
    # The 3-hour-old key stopped signing 2 h ago: its tokens (1 h at most) are all gone.
    assert [path.name for path in dropped] == [f"{now - 3 * hour}.key"]
    assert [key.path.name for key in ring.files()] == [new.name, f"{now - 2 * hour}.key"]


def test_roles_imply_as_keystones_defaults() -> None:
    assert effective_roles(["admin"]) == ["admin", "member", "reader"]
    assert effective_roles(["member"]) == ["member", "reader"]
    assert effective_roles(["reader"]) == ["reader"]
