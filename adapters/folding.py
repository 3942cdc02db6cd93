"""Apply a stored event to its aggregate, as eventsourcing's `mutate` does, faster.

For an event of an `@event`-decorated method, eventsourcing's `mutate` checks the event
against the aggregate, then `apply` filters every one of the event's attributes against
the method's signature (a dict built per event), binds the method and calls up the
`apply` chain. Here each event class's method and parameter names are looked up once.
Any class this does not recognise (an aggregate's created event, a snapshot, an event
class with its own `apply` or `mutate`) goes through its own `mutate`, unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from eventsourcing.domain import CanMutateAggregate, DecoratedFuncCaller, decorated_funcs

_Plan = tuple[Callable[..., None], tuple[str, ...]] | None
_plans: dict[type, _Plan] = {}


def apply_event(event: Any, aggregate: Any) -> Any:
    """`event.mutate(aggregate)`: the aggregate as the event leaves it."""
    cls = type(event)
    try:
        plan = _plans[cls]
    except KeyError:
        plan = _plans[cls] = _plan_for(cls)
    if (plan is None or aggregate is None
            or event.originator_version != aggregate.version + 1
            or event.originator_id != aggregate.id):
        return event.mutate(aggregate)  # its own way, and its own errors
    method, names = plan
    values = event.__dict__
    method(aggregate, **{name: values[name] for name in names if name in values})
    aggregate.version = event.originator_version
    aggregate.modified_on = event.timestamp
    return aggregate


def _plan_for(cls: type) -> _Plan:
    """The decorated method and its parameter names, when `mutate` would do no more than
    call it with the event's attributes of those names."""
    if (not issubclass(cls, DecoratedFuncCaller) or cls not in decorated_funcs
            or cls.mutate is not CanMutateAggregate.mutate
            or cls.apply is not DecoratedFuncCaller.apply
            or not _base_apply_is_empty(cls)):
        return None
    method = decorated_funcs[cls]
    names = tuple(inspect.signature(method).parameters)[1:]  # all but the aggregate's
    return method, names


def _base_apply_is_empty(cls: type) -> bool:
    """`DecoratedFuncCaller.apply` ends with `super().apply(aggregate)`: that must reach
    only the base class's empty `apply`."""
    mro = cls.__mro__
    after = mro[mro.index(DecoratedFuncCaller) + 1:]
    owner = next((base for base in after if "apply" in base.__dict__), None)
    return owner is CanMutateAggregate
