"""Managing users, their roles and application credentials (what `shelf user …` calls).

Whatever takes a right away (a deleted user, a new password, a revoked role, a deleted
credential) also revokes the tokens issued before it, in the same transaction: a token
must not outlive the right it stands for (see revocation.py for how soon that counts).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from application.auth.passwords import hash_secret
from application.auth.tokens import DEFAULT_LIFETIME
from domain.errors import Conflict, NotFound, UsageError
from domain.identity import (
    DIRECTORY_ID,
    REVOCATIONS_ID,
    Directory,
    Revocations,
    User,
    check_name,
    check_role,
    effective_roles,
)
from domain.service import RecordConflict, Repository, find

MIN_PASSWORD = 8


@dataclass(frozen=True)
class NewCredential:
    id: str
    name: str
    secret: str  # shown once, never stored


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"a password needs at least {MIN_PASSWORD} characters")
    return password


def load_user(repo: Repository, name: str) -> tuple[Directory, User]:
    directory = find(repo, DIRECTORY_ID, Directory)
    user_id = directory.user_id(name) if directory else None
    user = find(repo, uuid.UUID(user_id), User) if user_id else None
    if directory is None or user is None or user.deleted:
        raise NotFound(f"no such user: {name}")
    return directory, user


def user_view(user: User) -> dict[str, Any]:
    """What `user list` shows: never a hash."""
    return {"id": user.id.hex, "name": user.name, "project": user.project,
            "roles": user.roles, "effective_roles": effective_roles(user.roles),
            "credentials": sorted(held["name"] for held in user.credentials.values()),
            "created": user.created_on.isoformat()}


class UserAdmin:
    def __init__(self, repo: Repository, token_lifetime: timedelta = DEFAULT_LIFETIME) -> None:
        self.repo = repo
        self.token_lifetime = token_lifetime

    def create(self, name: str, project: str, roles: list[str], password: str,
               actor: str, request_id: str) -> User:
        check_name("user", name)
        if not roles:
            raise UsageError("a user needs at least one --role")
        roles = [check_role(role) for role in roles]
        password_hash = hash_secret(check_password(password))
        directory = find(self.repo, DIRECTORY_ID, Directory) or Directory()
        user = User(id=uuid.uuid4(), name=name, project=check_name("project", project),
                    roles=roles, password_hash=password_hash, user=actor,
                    request_id=request_id)
        directory.ensure_project(project, actor, request_id)
        directory.add_user(name, user.id.hex)
        self._save(directory, user)
        return user

    def list(self) -> list[dict[str, Any]]:
        directory = find(self.repo, DIRECTORY_ID, Directory)
        users = [find(self.repo, uuid.UUID(user_id), User)
                 for user_id in (directory.users.values() if directory else ())]
        return sorted((user_view(user) for user in users if user is not None),
                      key=lambda view: view["name"])

    def set_password(self, name: str, password: str, actor: str, request_id: str) -> None:
        password_hash = hash_secret(check_password(password))
        _, user = load_user(self.repo, name)
        user.set_password(password_hash, actor, request_id)
        self._save(user, self._revoke(f"user:{user.id.hex}", actor, request_id))

    def delete(self, name: str, actor: str, request_id: str) -> None:
        directory, user = load_user(self.repo, name)
        for credential_id in user.credentials:
            directory.unindex_credential(credential_id)
        user.delete(actor, request_id)
        directory.remove_user(name, user.id.hex)
        self._save(directory, user, self._revoke(f"user:{user.id.hex}", actor, request_id))

    def grant(self, name: str, role: str, actor: str, request_id: str) -> None:
        _, user = load_user(self.repo, name)
        user.grant(check_role(role), actor, request_id)
        self._save(user)

    def revoke(self, name: str, role: str, actor: str, request_id: str) -> None:
        _, user = load_user(self.repo, name)
        user.revoke(role, actor, request_id)
        self._save(user, self._revoke(f"user:{user.id.hex}", actor, request_id))

    def create_credential(self, name: str, credential_name: str | None, actor: str,
                          request_id: str) -> NewCredential:
        directory, user = load_user(self.repo, name)
        credential_id = uuid.uuid4().hex
        secret = secrets.token_urlsafe(32)
        label = check_name("credential", credential_name or f"cred-{credential_id[:8]}")
        user.add_credential(credential_id, label, hash_secret(secret), actor, request_id)
        directory.index_credential(credential_id, user.id.hex)
        self._save(directory, user)
        return NewCredential(credential_id, label, secret)

    def delete_credential(self, name: str, ref: str, actor: str, request_id: str) -> str:
        directory, user = load_user(self.repo, name)
        credential_id = user.credential_id(ref)
        user.delete_credential(credential_id, actor, request_id)
        directory.unindex_credential(credential_id)
        self._save(directory, user,
                   self._revoke(f"credential:{credential_id}", actor, request_id))
        return credential_id

    def _revoke(self, subject: str, actor: str, request_id: str) -> Revocations:
        revocations = find(self.repo, REVOCATIONS_ID, Revocations) or Revocations()
        revocations.revoke_subject(subject, datetime.now(UTC), self.token_lifetime,
                                   actor, request_id)
        return revocations

    def _save(self, *aggregates: Any) -> None:
        try:
            self.repo.save(*aggregates)
        except RecordConflict:
            raise Conflict("another change to the users won the race: try again") from None
