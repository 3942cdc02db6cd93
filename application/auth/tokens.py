"""Signed, expiring tokens that carry the identity they stand for.

A token is a Fernet token (encrypted and authenticated with the key ring's keys) of a
small msgpack document: token id, user id and name, project, roles, how it was obtained,
when it was issued and when it expires. Checking one is a signature check and a clock
comparison in memory: no database round trip. Revocation is checked separately
(application/auth/revocation.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from cryptography.fernet import InvalidToken

from application.auth.keys import KeyRing

DEFAULT_LIFETIME = timedelta(hours=1)
FORMAT = 1


class TokenInvalid(Exception):
    """Not a token of ours, tampered with, expired or revoked: always a 401."""


@dataclass(frozen=True)
class Identity:
    """A verified identity: who, on which project, with which (effective) roles."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]
    methods: tuple[str, ...] = ("password",)
    credential_id: str | None = None


@dataclass(frozen=True)
class Token:
    identity: Identity
    token_id: str
    issued_at: datetime
    expires_at: datetime
    text: str = field(default="", repr=False)


class _Payload(msgspec.Struct, array_like=True):
    format: int
    token_id: str
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: list[str]
    methods: list[str]
    credential_id: str | None
    issued_at: float
    expires_at: float


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Payload)


class TokenCodec:
    def __init__(self, keys: KeyRing, lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self.keys = keys
        self.lifetime = lifetime

    def issue(self, identity: Identity, now: datetime | None = None) -> Token:
        issued = now or datetime.now(UTC)
        expires = issued + self.lifetime
        token_id = secrets.token_hex(16)
        payload = _Payload(
            FORMAT, token_id, identity.user_id, identity.user_name, identity.project_id,
            identity.project_name, list(identity.roles), list(identity.methods),
            identity.credential_id, issued.timestamp(), expires.timestamp())
        text = self.keys.signer().encrypt(_ENCODER.encode(payload)).decode("ascii")
        return Token(identity, token_id, issued, expires, text)

    def check(self, text: str, now: datetime | None = None) -> Token:
        """The token's identity, or TokenInvalid (bad signature, garbage, or expired)."""
        try:
            payload = _DECODER.decode(self.keys.signer().decrypt(text.encode("ascii")))
        except (InvalidToken, msgspec.DecodeError, UnicodeEncodeError, ValueError):
            raise TokenInvalid("The request you have made requires authentication.") from None
        if payload.format != FORMAT:
            raise TokenInvalid("unknown token format")
        expires = datetime.fromtimestamp(payload.expires_at, UTC)
        if (now or datetime.now(UTC)) >= expires:
            raise TokenInvalid("The token has expired.")
        identity = Identity(
            payload.user_id, payload.user_name, payload.project_id, payload.project_name,
            tuple(payload.roles), tuple(payload.methods), payload.credential_id)
        return Token(identity, payload.token_id,
                     datetime.fromtimestamp(payload.issued_at, UTC), expires, text)
