"""Identity: users, their project and roles, application credentials, token revocations.

Every change is an event carrying who made it (`user`) and the request id, as everywhere
else in the store, so who was granted what, and when, is audited. Secrets never reach an
event: only their hashes (made in the application layer) do.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NotFound, UsageError

# Keystone's default roles and their implications: admin ⊃ member ⊃ reader.
IMPLIES: dict[str, tuple[str, ...]] = {"admin": ("member",), "member": ("reader",)}
DEFAULT_ROLES = ("admin", "member", "reader")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

DIRECTORY_ID = uuid.UUID("3c1f0e8a-6b7d-4e2a-9f10-5a4b3c2d1e0f")
REVOCATIONS_ID = uuid.UUID("7e2d1c0b-9a8f-4e6d-8c5b-4a3f2e1d0c9b")
LOGIN_NAMESPACE = uuid.UUID("b4a3c2d1-e0f9-4a8b-8c7d-6e5f4a3b2c1d")


def effective_roles(roles: list[str]) -> list[str]:
    """The roles held directly and every role they imply (as a Keystone token lists them)."""
    held: set[str] = set()
    pending = list(roles)
    while pending:
        role = pending.pop()
        if role not in held:
            held.add(role)
            pending.extend(IMPLIES.get(role, ()))
    return sorted(held)


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"bad {kind} name {name!r}: letters, digits and _.@- (at most 64)")
    return name


def check_role(role: str) -> str:
    if role not in DEFAULT_ROLES:
        raise UsageError(f"unknown role {role!r}: one of {', '.join(DEFAULT_ROLES)}")
    return role


class Directory(Aggregate):
    """Which user id holds each name (unique names), and the projects that exist."""

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return DIRECTORY_ID

    @event("DirectoryCreated")
    def __init__(self) -> None:
        self.users: dict[str, str] = {}  # name -> user id
        self.projects: list[str] = []
        self.credentials: dict[str, str] = {}  # application credential id -> user id

    def user_id(self, name: str) -> str | None:
        return self.users.get(name)

    def add_user(self, name: str, user_id: str) -> None:
        if name in self.users:
            raise Conflict(f"a user named {name!r} exists")
        self._user_named(name=name, user_id=user_id)

    @event("UserNamed")
    def _user_named(self, name: str, user_id: str) -> None:
        self.users[name] = user_id

    def remove_user(self, name: str, user_id: str) -> None:
        if self.users.get(name) == user_id:
            self._user_name_freed(name=name, user_id=user_id)

    @event("UserNameFreed")
    def _user_name_freed(self, name: str, user_id: str) -> None:
        del self.users[name]

    def index_credential(self, credential_id: str, user_id: str) -> None:
        self._credential_indexed(credential_id=credential_id, user_id=user_id)

    @event("CredentialIndexed")
    def _credential_indexed(self, credential_id: str, user_id: str) -> None:
        self.credentials[credential_id] = user_id

    def unindex_credential(self, credential_id: str) -> None:
        if credential_id in self.credentials:
            self._credential_unindexed(credential_id=credential_id)

    @event("CredentialUnindexed")
    def _credential_unindexed(self, credential_id: str) -> None:
        del self.credentials[credential_id]

    def ensure_project(self, name: str, user: str, request_id: str) -> None:
        if name not in self.projects:
            self._project_created(name=check_name("project", name), user=user,
                                  request_id=request_id)

    @event("ProjectCreated")
    def _project_created(self, name: str, user: str, request_id: str) -> None:
        self.projects.append(name)


class User(Aggregate):
    """One user: a project with roles on it, a password hash, application credentials."""

    @event("UserCreated")
    def __init__(
        self, *, id: uuid.UUID, name: str, project: str, roles: list[str],
        password_hash: str, user: str, request_id: str,
    ) -> None:
        self.name, self.project = name, project
        self.roles: list[str] = sorted(set(roles))
        self.password_hash = password_hash
        self.credentials: dict[str, dict[str, str]] = {}  # id -> name, secret_hash
        self.deleted = False

    def _require_live(self) -> None:
        if self.deleted:
            raise NotFound(f"no such user: {self.name}")

    def set_password(self, password_hash: str, user: str, request_id: str) -> None:
        self._require_live()
        self._password_changed(password_hash=password_hash, user=user, request_id=request_id)

    @event("PasswordChanged")
    def _password_changed(self, password_hash: str, user: str, request_id: str) -> None:
        self.password_hash = password_hash

    def grant(self, role: str, user: str, request_id: str) -> None:
        self._require_live()
        if role in self.roles:
            raise Conflict(f"user {self.name} already has role {role}")
        self._role_granted(role=check_role(role), user=user, request_id=request_id)

    @event("RoleGranted")
    def _role_granted(self, role: str, user: str, request_id: str) -> None:
        self.roles = sorted({*self.roles, role})

    def revoke(self, role: str, user: str, request_id: str) -> None:
        self._require_live()
        if role not in self.roles:
            raise Conflict(f"user {self.name} has no role {role}")
        self._role_revoked(role=role, user=user, request_id=request_id)

    @event("RoleRevoked")
    def _role_revoked(self, role: str, user: str, request_id: str) -> None:
        self.roles = [held for held in self.roles if held != role]

    def delete(self, user: str, request_id: str) -> None:
        self._require_live()
        self._deleted(user=user, request_id=request_id)

    @event("UserDeleted")
    def _deleted(self, user: str, request_id: str) -> None:
        self.deleted = True
        self.credentials = {}

    def add_credential(self, credential_id: str, name: str, secret_hash: str,
                       user: str, request_id: str) -> None:
        self._require_live()
        if any(held["name"] == name for held in self.credentials.values()):
            raise Conflict(f"user {self.name} has a credential named {name!r}")
        self._credential_created(credential_id=credential_id, name=name,
                                 secret_hash=secret_hash, user=user, request_id=request_id)

    @event("CredentialCreated")
    def _credential_created(self, credential_id: str, name: str, secret_hash: str,
                            user: str, request_id: str) -> None:
        self.credentials[credential_id] = {"name": name, "secret_hash": secret_hash}

    def credential_id(self, ref: str) -> str:
        """A credential of this user by id or name."""
        for credential_id, held in self.credentials.items():
            if ref in (credential_id, held["name"]):
                return credential_id
        raise NotFound(f"user {self.name} has no credential {ref}")

    def delete_credential(self, credential_id: str, user: str, request_id: str) -> None:
        self._require_live()
        self._credential_deleted(credential_id=self.credential_id(credential_id),
                                 user=user, request_id=request_id)

    @event("CredentialDeleted")
    def _credential_deleted(self, credential_id: str, user: str, request_id: str) -> None:
        del self.credentials[credential_id]


class Revocations(Aggregate):
    """Tokens revoked before they expire: single tokens, and every token of a subject
    (`user:ID`, `credential:ID`) issued before a time. An entry is dropped once every token
    it covers has expired, so the list stays as small as the tokens still alive."""

    @staticmethod
    def create_id(**_: Any) -> uuid.UUID:
        return REVOCATIONS_ID

    @event("RevocationsCreated")
    def __init__(self) -> None:
        self.tokens: dict[str, datetime] = {}  # token id -> its expiry
        self.subjects: dict[str, list[datetime]] = {}  # -> [before, kept until]

    def revoke_token(self, token_id: str, expires_at: datetime, at: datetime,
                     user: str, request_id: str) -> None:
        self._token_revoked(token_id=token_id, expires_at=expires_at, at=at, user=user,
                            request_id=request_id)

    @event("TokenRevoked")
    def _token_revoked(self, token_id: str, expires_at: datetime, at: datetime,
                       user: str, request_id: str) -> None:
        self._prune(at)
        self.tokens[token_id] = expires_at

    def revoke_subject(self, subject: str, at: datetime, lifetime: timedelta,
                       user: str, request_id: str) -> None:
        """Every token of `subject` issued up to `at`; tokens live at most `lifetime`."""
        self._subject_revoked(subject=subject, at=at, until=at + lifetime, user=user,
                              request_id=request_id)

    @event("SubjectTokensRevoked")
    def _subject_revoked(self, subject: str, at: datetime, until: datetime,
                         user: str, request_id: str) -> None:
        self._prune(at)
        self.subjects[subject] = [at, until]

    def _prune(self, now: datetime) -> None:
        self.tokens = {key: expiry for key, expiry in self.tokens.items() if expiry > now}
        self.subjects = {key: span for key, span in self.subjects.items() if span[1] > now}


def login_record_id(name: str) -> uuid.UUID:
    return uuid.uuid5(LOGIN_NAMESPACE, name)


class LoginRecord(Aggregate):
    """Failed logins under one user name (the name need not exist): who, from where, when."""

    @staticmethod
    def create_id(name: str, **_: Any) -> uuid.UUID:
        return login_record_id(name)

    @event("LoginRecordCreated")
    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0

    def failed(self, method: str, remote: str, at: datetime, request_id: str) -> None:
        self._login_failed(method=method, remote=remote, at=at, request_id=request_id,
                           name=self.name)

    @event("LoginFailed")
    def _login_failed(self, method: str, remote: str, at: datetime, request_id: str,
                      name: str = "") -> None:  # the name tried, also in each event
        self.failures += 1
