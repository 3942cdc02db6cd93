"""Instances booted before instances recorded a project, a creator's id or a flavor still
load, by either folding path: they belong to the CLI's default project."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from adapters.folding import apply_event
from domain.instance import LEGACY_PROJECT, Instance


def old_boot_event() -> Any:
    instance = Instance(
        id=uuid.uuid4(), name="old", host="h1", vcpus=1, memory_mb=256, disk_gb=1,
        image_id=None, volume_backed=False, ip="10.213.0.5", mac="52:54:00:00:00:05",
        user="olduser", request_id="req-1", project_id="p", user_id="u", flavor=None,
    )
    event = instance.collect_events()[0]
    for name in ("project_id", "user_id", "flavor"):  # what an older shelf didn't store
        del event.__dict__[name]
    return event


@pytest.mark.parametrize("fold", [lambda e: e.mutate(None), lambda e: apply_event(e, None)],
                         ids=["mutate", "apply_event"])
def test_an_old_boot_event_loads(fold: Any) -> None:
    instance = fold(old_boot_event())
    assert (instance.project_id, instance.user_id, instance.flavor) == (
        LEGACY_PROJECT, "olduser", None)


def test_an_old_snapshot_loads() -> None:
    """A snapshot holds the aggregate's attributes as they were: the class supplies the
    ones it lacks."""
    instance = old_boot_event().mutate(None)
    for name in ("project_id", "user_id", "flavor"):
        del instance.__dict__[name]
    assert (instance.project_id, instance.user_id, instance.flavor) == (
        LEGACY_PROJECT, None, None)
