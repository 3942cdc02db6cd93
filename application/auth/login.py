"""Logging in (password or application credential), checking and revoking tokens.

A failed login is answered the same way whatever was wrong (unknown user, wrong
password, wrong project, deleted credential), costs the same hash verification, and is
recorded as a `LoginFailed` event (the name tried, the method, the client's address, the
time; never the secret) and logged.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

from adapters.logs import get_logger
from application.auth.passwords import verify_secret
from application.auth.revocation import RevocationList
from application.auth.throttle import LoginThrottle
from application.auth.tokens import Identity, Token, TokenCodec, TokenInvalid
from domain.identity import (
    DIRECTORY_ID,
    REVOCATIONS_ID,
    Directory,
    LoginRecord,
    Revocations,
    User,
    effective_roles,
    login_record_id,
)
from domain.service import RecordConflict, Repository, find

FAILED_LOGIN = "The request you have made requires authentication."


class LoginFailed(Exception):
    """Any failed login: one message, whatever the reason."""

    def __init__(self) -> None:
        super().__init__(FAILED_LOGIN)


def identity_of(user: User, method: str, credential_id: str | None = None) -> Identity:
    return Identity(user.id.hex, user.name, user.project, user.project,
                    tuple(effective_roles(user.roles)), (method,), credential_id)


class Authenticator:
    def __init__(self, repo: Repository, codec: TokenCodec, revocations: RevocationList,
                 throttle: LoginThrottle | None = None) -> None:
        self.repo = repo
        self.codec = codec
        self.revocations = revocations
        self.throttle = throttle or LoginThrottle()
        self.log = get_logger("shelf.identity")

    def login_password(self, name: str, password: str, project: str | None,
                       remote: str, request_id: str) -> Token:
        user = self._user_named(name)
        matches = verify_secret(user.password_hash if user else None, password)
        if user is None or not matches or project not in (None, user.project):
            self._failed(name, "password", remote, request_id)
        assert user is not None
        return self._issued(name, identity_of(user, "password"), remote, request_id)

    def login_credential(self, credential_id: str, secret: str, project: str | None,
                         remote: str, request_id: str) -> Token:
        user = self._credential_owner(credential_id)
        held = user.credentials.get(credential_id) if user else None
        matches = verify_secret(held["secret_hash"] if held else None, secret)
        if user is None or not matches or project not in (None, user.project):
            self._failed(f"credential:{credential_id}", "application_credential", remote,
                         request_id)
        assert user is not None
        identity = identity_of(user, "application_credential", credential_id)
        return self._issued(f"credential:{credential_id}", identity, remote, request_id)

    def check(self, text: str) -> Token:
        """A valid, unexpired, unrevoked token's identity (memory only), or TokenInvalid."""
        token = self.codec.check(text)
        if self.revocations.is_revoked(token):
            raise TokenInvalid("The token has been revoked.")
        return token

    def revoke(self, token: Token, actor: str, request_id: str) -> None:
        for _ in range(5):  # the list is one aggregate: another revocation may win a race
            revocations = find(self.repo, REVOCATIONS_ID, Revocations) or Revocations()
            revocations.revoke_token(token.token_id, token.expires_at, datetime.now(UTC),
                                     actor, request_id)
            try:
                self.repo.save(revocations)
            except RecordConflict:
                continue
            self.revocations.add(revocations)
            return
        raise RecordConflict("the revocation list kept changing: try again")

    def login_delay(self, who: str) -> float:
        return self.throttle.delay(who)

    def _user_named(self, name: str) -> User | None:
        directory = find(self.repo, DIRECTORY_ID, Directory)
        return self._live_user(directory.user_id(name) if directory else None)

    def _credential_owner(self, credential_id: str) -> User | None:
        directory = find(self.repo, DIRECTORY_ID, Directory)
        return self._live_user(directory.credentials.get(credential_id) if directory else None)

    def _live_user(self, user_id: str | None) -> User | None:
        user = find(self.repo, uuid.UUID(user_id), User) if user_id else None
        return None if user is None or user.deleted else user

    def _issued(self, who: str, identity: Identity, remote: str, request_id: str) -> Token:
        self.throttle.succeeded(who)
        token = self.codec.issue(identity)
        self.log.info("login.succeeded", user=identity.user_name, user_id=identity.user_id,
                      project=identity.project_id, method=identity.methods[0],
                      remote=remote, request_id=request_id)
        return token

    def _failed(self, who: str, method: str, remote: str, request_id: str) -> None:
        who = who[:255]  # a name is whatever the client sent: bounded in the record
        self.throttle.failed(who)
        self.log.warning("login.failed", name=who, method=method, remote=remote,
                         request_id=request_id)
        record = find(self.repo, login_record_id(who), LoginRecord) or LoginRecord(name=who)
        record.failed(method, remote, datetime.now(UTC), request_id)
        with contextlib.suppress(RecordConflict):  # two at once: the log line has it
            self.repo.save(record)
        raise LoginFailed()
