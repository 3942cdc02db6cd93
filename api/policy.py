"""Nova's policy rules, names and defaults (api.md's table), through oslo.policy.

An operator's `policy.yaml` (`shelf api --policy-file`) overrides any rule by name, as it
would in Nova. A refusal is 403 and records nothing; a server of another project never
gets this far (it is 404 before policy is asked).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import policy

from api.errors import forbidden
from application.identity import Caller

ADMIN = "rule:context_is_admin"
PROJECT_MEMBER_OR_ADMIN = "rule:project_member_or_admin"
PROJECT_READER_OR_ADMIN = "rule:project_reader_or_admin"
ANYONE = "@"

BASE_RULES = {
    "context_is_admin": "role:admin",
    "admin_api": "is_admin:True",
    "project_member_api": "role:member and project_id:%(project_id)s",
    "project_reader_api": "role:reader and project_id:%(project_id)s",
    "project_member_or_admin": "rule:project_member_api or rule:context_is_admin",
    "project_reader_or_admin": "rule:project_reader_api or rule:context_is_admin",
}

SHELVE = "os_compute_api:os-shelve:shelve"
UNSHELVE = "os_compute_api:os-shelve:unshelve"
SHELVE_OFFLOAD = "os_compute_api:os-shelve:shelve_offload"
UNSHELVE_TO_HOST = "os_compute_api:os-shelve:unshelve_to_host"
CREATE = "os_compute_api:servers:create"
DELETE = "os_compute_api:servers:delete"
START = "os_compute_api:servers:start"
STOP = "os_compute_api:servers:stop"
PAUSE = "os_compute_api:os-pause-server:pause"
UNPAUSE = "os_compute_api:os-pause-server:unpause"
SUSPEND = "os_compute_api:os-suspend-server:suspend"
RESUME = "os_compute_api:os-suspend-server:resume"
INDEX = "os_compute_api:servers:index"
DETAIL = "os_compute_api:servers:detail"
SHOW = "os_compute_api:servers:show"
INDEX_ALL_TENANTS = "os_compute_api:servers:index:get_all_tenants"
DETAIL_ALL_TENANTS = "os_compute_api:servers:detail:get_all_tenants"
ALLOW_ALL_FILTERS = "os_compute_api:servers:allow_all_filters"
HOST_STATUS = "os_compute_api:servers:show:host_status"
SERVER_ATTRIBUTES = "os_compute_api:os-extended-server-attributes"
ACTIONS_LIST = "os_compute_api:os-instance-actions:list"
ACTIONS_SHOW = "os_compute_api:os-instance-actions:show"
ACTION_EVENTS = "os_compute_api:os-instance-actions:events"
ACTION_EVENT_DETAILS = "os_compute_api:os-instance-actions:events:details"
FLAVOR_CREATE = "os_compute_api:os-flavor-manage:create"
FLAVOR_DELETE = "os_compute_api:os-flavor-manage:delete"
HYPERVISORS_LIST = "os_compute_api:os-hypervisors:list"
HYPERVISORS_DETAIL = "os_compute_api:os-hypervisors:list-detail"
HYPERVISORS_SHOW = "os_compute_api:os-hypervisors:show"
CONSOLE_OUTPUT = "os_compute_api:os-console-output"

DEFAULTS = {
    **BASE_RULES,
    **dict.fromkeys((SHELVE, UNSHELVE, CREATE, DELETE, START, STOP, PAUSE, UNPAUSE,
                     SUSPEND, RESUME, CONSOLE_OUTPUT), PROJECT_MEMBER_OR_ADMIN),
    **dict.fromkeys((SHELVE_OFFLOAD, UNSHELVE_TO_HOST, INDEX_ALL_TENANTS, DETAIL_ALL_TENANTS,
                     ALLOW_ALL_FILTERS, HOST_STATUS, SERVER_ATTRIBUTES, ACTION_EVENTS,
                     ACTION_EVENT_DETAILS, FLAVOR_CREATE, FLAVOR_DELETE, HYPERVISORS_LIST,
                     HYPERVISORS_DETAIL, HYPERVISORS_SHOW), ADMIN),
    **dict.fromkeys((INDEX, DETAIL, SHOW, ACTIONS_LIST, ACTIONS_SHOW),
                    PROJECT_READER_OR_ADMIN),
}

# The action names of POST /servers/{id}/action and their rules.
ACTION_RULES = {
    "shelve": SHELVE, "shelveOffload": SHELVE_OFFLOAD, "unshelve": UNSHELVE,
    "os-start": START, "os-stop": STOP, "pause": PAUSE, "unpause": UNPAUSE,
    "suspend": SUSPEND, "resume": RESUME, "os-getConsoleOutput": CONSOLE_OUTPUT,
}


class Policy:
    def __init__(self, policy_file: Path | None = None) -> None:
        conf = cfg.ConfigOpts()
        conf([], project="shelf", default_config_files=[], default_config_dirs=[])
        # use_conf=True even without a file: with False oslo.policy loads no rules at all
        # (not even the registered defaults) and denies everything.
        self.enforcer = policy.Enforcer(
            conf, policy_file=str(policy_file) if policy_file else None, use_conf=True)
        self.enforcer.register_defaults(
            [policy.RuleDefault(name, check) for name, check in DEFAULTS.items()])
        self.enforcer.load_rules()

    def allows(self, rule: str, caller: Caller, project_id: str | None = None) -> bool:
        """`project_id` is the target's project (the caller's own when it has none)."""
        return self._decide(rule, caller, project_id or caller.project_id)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one Policy per process, kept for good)
    def _decide(self, rule: str, caller: Caller, project_id: str) -> bool:
        """The rules are fixed once loaded, so a decision depends on these values only
        (an enforcement costs about 0.4 ms; a show asks two)."""
        target = {"project_id": project_id, "user_id": caller.user_id}
        return bool(self.enforcer.enforce(rule, target, _credentials(caller)))

    def authorize(self, rule: str, caller: Caller, project_id: str | None = None) -> None:
        if not self.allows(rule, caller, project_id):
            raise forbidden(rule)


def _credentials(caller: Caller) -> dict[str, Any]:
    return {"user_id": caller.user_id, "project_id": caller.project_id,
            "roles": sorted(caller.roles), "is_admin": caller.is_admin}
