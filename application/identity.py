"""Who is asking: established once by the entrypoint, recorded in every event it causes.

The CLI acts directly on the store (it holds the store's credentials), so its caller is
the operating-system user; the HTTP API's caller is the identity its auth strategy
verified. Never a field of a request body or a flag: a typed name proves nothing.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field

ADMIN_ROLE = "admin"
DEFAULT_PROJECT = "admin"  # the CLI's project unless $SHELF_PROJECT or --project says


@dataclass(frozen=True)
class Caller:
    """A verified identity: the user's name and id, the project acted in, its roles."""

    user_name: str
    user_id: str
    project_id: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return ADMIN_ROLE in self.roles


def operating_system_caller(project: str | None = None) -> Caller:
    """The CLI's caller: whoever this process runs as, an admin in `project`."""
    user = operating_system_user()
    return Caller(
        user_name=user, user_id=user,
        project_id=project or os.environ.get("SHELF_PROJECT") or DEFAULT_PROJECT,
        roles=frozenset({ADMIN_ROLE, "member", "reader"}),
    )


def operating_system_user() -> str:
    """The effective user's login name (not $USER, which anyone can set), else its uid."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        return str(uid)
