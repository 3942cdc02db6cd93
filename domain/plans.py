"""Each operation as a short, named sequence of steps, read top to bottom.

The process manager asks `next_step(instance)`: the first step of the instance's current
plan that its recorded state does not show as done, or FINISH when every step is done.
Because the answer depends only on recorded state, a restarted worker resumes exactly
where the last recorded step left off: resumption needs no special code path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from domain import states as s

if TYPE_CHECKING:
    from domain.instance import Instance

# Hypervisor-side steps (also the failpoint names).
POWER_OFF = "PowerOff"
POWER_ON = "PowerOn"
PAUSE = "Pause"
UNPAUSE = "Unpause"
SUSPEND = "Suspend"
RESUME = "Resume"
SNAPSHOT = "Snapshot"
CLEAN_NETWORK = "CleanNetwork"
DESTROY = "Destroy"
RELEASE_CLAIM = "ReleaseClaim"
CLAIM = "Claim"
SETUP_NETWORK = "SetupNetwork"
SPAWN = "Spawn"
DELETE_IMAGE = "DeleteImage"
DELETE_VOLUME = "DeleteVolume"
# Bookkeeping step: records the plan's closing event.
FINISH = "Finish"

HYPERVISOR_STEPS = (
    POWER_OFF, POWER_ON, PAUSE, UNPAUSE, SUSPEND, RESUME, SNAPSHOT, CLEAN_NETWORK, DESTROY,
    RELEASE_CLAIM, CLAIM, SETUP_NETWORK, SPAWN, DELETE_IMAGE, DELETE_VOLUME,
)

DONE: dict[str, Callable[[Instance], bool]] = {
    # Powered off once per plan even if already off: "again, to be sure" (lifecycle.md).
    POWER_OFF: lambda i: i.host is None or POWER_OFF in i.done_in_plan,
    POWER_ON: lambda i: i.power_state == s.RUNNING,
    PAUSE: lambda i: i.power_state == s.POWER_PAUSED,
    UNPAUSE: lambda i: i.power_state == s.RUNNING,
    SUSPEND: lambda i: i.power_state == s.POWER_SUSPENDED,
    RESUME: lambda i: i.power_state == s.RUNNING,
    SNAPSHOT: lambda i: i.shelved_image_id is not None,
    # While a claim is held, a step may have acted there without being recorded (a crash,
    # or a delete that overtook it): undo steps then act on the claim host once regardless.
    CLEAN_NETWORK: lambda i: i.network_host is None and (i.claim_host is None or i.network_cleaned),
    DESTROY: lambda i: i.host is None and (i.claim_host is None or i.destroyed),
    RELEASE_CLAIM: lambda i: i.claim_host is None,
    CLAIM: lambda i: i.claim_host is not None,
    SETUP_NETWORK: lambda i: i.claim_host is not None and i.network_host == i.claim_host,
    SPAWN: lambda i: i.host is not None and i.power_state == s.RUNNING,
    DELETE_IMAGE: lambda i: i.shelved_image_id is None and i.pending_image_id is None,
    DELETE_VOLUME: lambda i: not i.volume_backed or i.volume_deleted,
}

# plan name -> (steps in order, closing event recorded by FINISH)
PLANS: dict[str, tuple[tuple[str, ...], str]] = {
    "create": ((CLAIM, SETUP_NETWORK, SPAWN), "Booted"),
    "start": ((POWER_ON,), "Started"),
    "stop": ((POWER_OFF,), "Stopped"),
    "pause": ((PAUSE,), "Paused"),
    "unpause": ((UNPAUSE,), "Unpaused"),
    "suspend": ((SUSPEND,), "Suspended"),
    "resume": ((RESUME,), "Resumed"),
    "shelve": ((POWER_OFF, SNAPSHOT), "Shelved"),
    "shelve_offload": ((POWER_OFF, CLEAN_NETWORK, DESTROY, RELEASE_CLAIM), "ShelveOffloaded"),
    "unshelve_in_place": ((SETUP_NETWORK, POWER_ON, DELETE_IMAGE), "Unshelved"),
    "unshelve_offloaded": ((CLAIM, SETUP_NETWORK, SPAWN, DELETE_IMAGE), "Unshelved"),
    "delete": (
        (POWER_OFF, CLEAN_NETWORK, DESTROY, RELEASE_CLAIM, DELETE_IMAGE, DELETE_VOLUME),
        "Deleted",
    ),
    # Rollbacks after a StepFailed: undo what the failed operation set up.
    "undo_spawn": ((DESTROY, CLEAN_NETWORK, RELEASE_CLAIM), "RolledBack"),
    "undo_snapshot": ((DELETE_IMAGE,), "RolledBack"),
    "abort": ((), "RolledBack"),
}

# Hypervisor steps whose plan is still "active": a power off inside offload never waits.
FORCED_POWER_OFF_PLANS = frozenset({"shelve_offload", "delete"})


def steps_of(plan: str) -> tuple[str, ...]:
    return PLANS[plan][0]


def closing_event(plan: str) -> str:
    return PLANS[plan][1]


def next_step(instance: Instance) -> str | None:
    """The step to perform next, FINISH to close the plan, or None when idle."""
    if instance.plan is None:
        return None
    for step in steps_of(instance.plan):
        if not DONE[step](instance):
            return step
    return FINISH


def rollback_for(plan: str, step: str, vm_state: str, image_missing: bool) -> tuple[str, str]:
    """(rollback plan, vm_state to end in) after `step` of `plan` failed (lifecycle.md)."""
    if plan in ("undo_spawn", "undo_snapshot", "abort", "delete"):
        return "abort", s.ERROR
    if plan == "create":
        return ("abort" if step == CLAIM else "undo_spawn"), s.ERROR
    if plan == "shelve" and step == SNAPSHOT:
        return "undo_snapshot", s.STOPPED
    if plan == "unshelve_offloaded":
        if step == CLAIM:
            return "abort", s.SHELVED_OFFLOADED
        if step == DELETE_IMAGE:
            return "abort", s.ACTIVE
        return "undo_spawn", (s.ERROR if image_missing else s.SHELVED_OFFLOADED)
    if plan == "unshelve_in_place" and step == DELETE_IMAGE:
        return "abort", s.ACTIVE
    return "abort", vm_state
