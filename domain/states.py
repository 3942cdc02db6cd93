"""The vm_state / task_state / power_state vocabulary of lifecycle.md."""

from __future__ import annotations

# vm_state
BUILDING = "building"
ACTIVE = "active"
STOPPED = "stopped"
PAUSED = "paused"
SUSPENDED = "suspended"
SHELVED = "shelved"
SHELVED_OFFLOADED = "shelved_offloaded"
ERROR = "error"
DELETED = "deleted"

# task_state while work is in flight (None when idle)
SCHEDULING = "scheduling"
NETWORKING = "networking"
SPAWNING = "spawning"
SHELVING = "shelving"
SHELVING_IMAGE_PENDING_UPLOAD = "shelving_image_pending_upload"
SHELVING_IMAGE_UPLOADING = "shelving_image_uploading"
SHELVING_OFFLOADING = "shelving_offloading"
UNSHELVING = "unshelving"
POWERING_ON = "powering_on"
POWERING_OFF = "powering_off"
PAUSING = "pausing"
UNPAUSING = "unpausing"
SUSPENDING = "suspending"
RESUMING = "resuming"
DELETING = "deleting"

# power_state (the same words the HostDriver port reports)
RUNNING = "running"
POWER_PAUSED = "paused"
SHUTDOWN = "shutdown"
POWER_SUSPENDED = "suspended"
NOSTATE = "nostate"

# Nova's API status names, shown by `list`.
STATUS_BY_VM_STATE = {
    BUILDING: "BUILD",
    ACTIVE: "ACTIVE",
    STOPPED: "SHUTOFF",
    PAUSED: "PAUSED",
    SUSPENDED: "SUSPENDED",
    SHELVED: "SHELVED",
    SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
    ERROR: "ERROR",
    DELETED: "DELETED",
}


def status_of(vm_state: str) -> str:
    return STATUS_BY_VM_STATE.get(vm_state, vm_state.upper())
