"""`apply_event`'s shortcuts take the same path as eventsourcing's `mutate` in the cases a
random history seldom holds: an event stored before a parameter with a default existed,
a method that takes keyword-only arguments, a method that raises KeyError itself, and
created events with and without an `id` parameter."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from eventsourcing.domain import Aggregate, event

from adapters import folding
from adapters.folding import apply_event


class Tank(Aggregate):
    @event("Filled")
    def __init__(self, name: str, litres: int = 10) -> None:
        self.name, self.litres = name, litres
        self.log: list[Any] = []

    @event("Topped")
    def top(self, litres: int, by: str = "nobody") -> None:
        self.litres += litres
        self.log.append(by)

    @event("Labelled")
    def label(self, *, text: str, colour: str) -> None:
        self.log.append(f"{colour}:{text}")

    @event("Drained")
    def drain(self, tap: str, into: str) -> None:
        self.log.append({"left": 1}[tap])  # KeyError for any tap but "left"


class Named(Aggregate):
    @event("Named")
    def __init__(self, id: uuid.UUID, name: str) -> None:  # `id`: eventsourcing passes it
        self.name, self.own_id = name, id


def pending(aggregate: Aggregate) -> list[Any]:
    return list(aggregate.collect_events())


def both_ways(events: list[Any]) -> tuple[Any, Any]:
    """The aggregate as `mutate` folds the events, and as `apply_event` does."""
    theirs = ours = None
    for stored in events:
        theirs = copy.deepcopy(stored).mutate(theirs)
        ours = apply_event(copy.deepcopy(stored), ours)
    return theirs, ours


def test_created_events_build_the_same_aggregate() -> None:
    tank, named = Tank(name="t1"), Named(id=uuid.uuid4(), name="n1")
    for events in (pending(tank), pending(named)):
        theirs, ours = both_ways(events)
        assert type(ours) is type(theirs) and vars(ours) == vars(theirs)
    given = uuid.uuid4()
    assert both_ways(pending(Named(id=given, name="n2")))[1].own_id == given


def test_an_event_stored_before_a_defaulted_parameter_gets_the_default() -> None:
    tank = Tank(name="t1")
    tank.top(litres=5, by="ops")
    events = pending(tank)
    del events[1].__dict__["by"]  # as if stored by a version without `by`
    theirs, ours = both_ways(events)
    assert vars(ours) == vars(theirs)
    assert ours.log == ["nobody"] and ours.litres == 15


def test_keyword_only_parameters_are_passed_by_name() -> None:
    tank = Tank(name="t1")
    tank.label(text="diesel", colour="red")
    theirs, ours = both_ways(pending(tank))
    assert vars(ours) == vars(theirs) and ours.log == ["red:diesel"]


def test_a_key_error_from_the_method_is_raised_once_not_retried() -> None:
    tank = Tank(name="t1")
    tank.drain(tap="left", into="bucket")
    events = pending(tank)
    events[1].__dict__["tap"] = "right"
    ours = apply_event(events[0], None)
    with pytest.raises(KeyError):
        apply_event(events[1], ours)
    assert ours.log == [] and ours.version == 1  # ran once, changed nothing


class Counted(Aggregate):
    """A created event with an `apply` of its own: `mutate` must do it, not a shortcut."""

    class Opened(Aggregate.Created):
        start: int

        def apply(self, aggregate: Any) -> None:
            aggregate.applied = True

    @event(Opened)
    def __init__(self, start: int) -> None:
        self.count = start


def test_the_fast_paths_are_taken_where_they_apply_and_not_elsewhere() -> None:
    tank = Tank(name="t1")
    tank.top(litres=1)
    tank.label(text="x", colour="y")
    both_ways(pending(tank))
    theirs, ours = both_ways(pending(Counted(start=3)))
    assert vars(ours) == vars(theirs) and ours.applied and ours.count == 3
    creations = {cls: creation for (cls, _), creation in folding._creations.items()}
    assert creations[Tank.Filled] is not None and creations[Counted.Opened] is None
    assert folding._plans[Tank.Topped] is not None
    assert folding._plans[Tank.Topped][2] is not folding._no_getter  # positional
    assert folding._plans[Tank.Labelled][2] is folding._no_getter  # keyword-only
