"""What `--auth keystone` takes from Keystone's validation answer (its documented shape)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.errors import ApiError
from api.keystone_auth import caller_from_token

ANSWER = {"token": {
    "methods": ["password"], "expires_at": "2026-12-04T19:54:32.000000Z",
    "user": {"id": "4888b67e", "name": "alice", "domain": {"id": "default"}},
    "project": {"id": "beeb18c3", "name": "web", "domain": {"id": "default"}},
    "roles": [{"id": "1", "name": "member"}, {"id": "2", "name": "reader"}]}}


def test_user_project_and_roles_come_from_keystone() -> None:
    caller, expires = caller_from_token(ANSWER)
    assert (caller.user_name, caller.user_id, caller.project_id) == (
        "alice", "4888b67e", "beeb18c3")
    assert caller.roles == {"member", "reader"}
    assert expires == datetime(2026, 12, 4, 19, 54, 32, tzinfo=UTC).timestamp()


def test_an_unscoped_token_acts_on_no_project() -> None:
    unscoped = {"token": {key: value for key, value in ANSWER["token"].items()
                          if key != "project"}}
    with pytest.raises(ApiError) as refused:
        caller_from_token(unscoped)
    assert refused.value.status == 401
