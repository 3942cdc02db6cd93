"""The `instances` projection: every instance's current state, as `show --json` prints it."""

from __future__ import annotations

from domain.instance import Instance
from projections.base import Change
from projections.db import Database
from projections.views import INSTANCE_COLUMNS, instance_row, instance_view


class InstancesProjection:
    name = "instances"
    tables = ("instances",)
    folds = (Instance,)
    columns = {"instances": INSTANCE_COLUMNS}
    schema = (
        """CREATE TABLE IF NOT EXISTS instances (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL,
            vm_state TEXT NOT NULL, task_state TEXT, power_state TEXT NOT NULL, host TEXT,
            vcpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,
            volume_backed INTEGER NOT NULL, image_id TEXT, ip TEXT, mac TEXT,
            shelved_at TEXT, shelved_image_id TEXT, shelved_host TEXT, fault TEXT,
            action TEXT, request_id TEXT, "user" TEXT, project_id TEXT, user_id TEXT,
            flavor TEXT, created_at TEXT, updated_at TEXT, version INTEGER NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS instances_name ON instances (name)",
        "CREATE INDEX IF NOT EXISTS instances_task ON instances (task_state)",
        "CREATE INDEX IF NOT EXISTS instances_vm_state ON instances (vm_state)",
        "CREATE INDEX IF NOT EXISTS instances_created ON instances (created_at)",
        "CREATE INDEX IF NOT EXISTS instances_project ON instances (project_id, created_at)",
    )

    def __init__(self) -> None:
        self._latest: dict[str, Instance] = {}  # one write per instance per batch

    def observe(self, change: Change) -> None:
        if isinstance(change.state, Instance):
            self._latest[change.aggregate_id] = change.state

    def write(self, db: Database) -> None:
        # The last state of the batch is the one written, so the live object will do.
        rows = [instance_row(instance_view(state)) for state in self._latest.values()]
        db.replace_many("instances", INSTANCE_COLUMNS, ("id",), rows)
        self._latest.clear()

    def forget(self, empty: bool = False) -> None:
        self._latest.clear()
