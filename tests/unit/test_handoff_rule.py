"""The rule `serve --host`'s hand-over rests on with a SQLite store (application/poll_feed.py):
whenever an instance's next step calls a hypervisor, the event recorded last names that step's host,
or names none. The serve owning that host then hears of it from the event log; a serve
owning another host skips it. Checked at every step boundary of every operation of
test_plans, with every claim placed on another host than the instance booted on, so a
step that moves the instance shows."""

from __future__ import annotations

import pytest

from domain import plans
from domain.process_manager import acting_host
from tests.unit.test_plans import MAX_STEPS, OPERATIONS, names


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_the_last_event_names_the_next_steps_host(name: str) -> None:
    operation = OPERATIONS[name]
    life, at = operation.begin()
    failed = False
    for _ in range(MAX_STEPS):
        step = plans.next_step(life.inst)
        if step is None:
            return
        acting = acting_host(life.inst, step)
        last = life.history[-1].event
        named = getattr(last, "host", None)
        assert acting is None or named in (None, acting), (
            f"{type(last).__name__} names {named}, but {step} acts on {acting}")
        fail = not failed and step == operation.fail_at
        failed = failed or fail
        life.step(fail=fail, image_missing=operation.image_missing, pick_host="h2")
    raise AssertionError(f"{name} did not finish: {names(life.history[at:])}")
