"""`apply_event` folds every stored event exactly as eventsourcing's own `mutate` does."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

from adapters.folding import apply_event
from application.bootstrap import Context
from bench.seed import Seeder


def test_apply_event_equals_mutate_over_a_random_history(tmp_path: Path) -> None:
    ctx = Context(f"sqlite:///{tmp_path / 'shelf.db'}")
    seeder = Seeder(ctx.app, tmp_path / "seed", hosts=3, seed=7, error_rate=0.05)
    try:
        seeder.run(150)
    finally:
        seeder.close()
    theirs: dict[Any, Any] = {}
    ours: dict[Any, Any] = {}
    kinds: set[str] = set()
    for notification in ctx.app.recorder.select_notifications(start=1, limit=1_000_000):
        event = ctx.app.mapper.to_domain_event(notification)
        key = event.originator_id
        theirs[key] = event.mutate(theirs.get(key))
        ours[key] = apply_event(copy.copy(event), ours.get(key))
        assert vars(ours[key]) == vars(theirs[key]), type(event)
        kinds.add(type(event).__qualname__)
        # Each fold holds its own objects: compare them, then keep folding separately.
        ours[key] = pickle.loads(pickle.dumps(ours[key]))
    ctx.close()
    assert {"Instance.Spawned", "Instance.StepFailed", "Host.Claimed"} <= kinds, kinds
