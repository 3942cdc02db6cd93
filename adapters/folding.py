"""Apply a stored event to its aggregate, as eventsourcing's `mutate` does, faster.

For an event of an `@event`-decorated method, eventsourcing's `mutate` checks the event
against the aggregate, then `apply` filters every one of the event's attributes against
the method's signature (a dict built per event), binds the method and calls up the
`apply` chain. Here each event class's method and parameter names are looked up once.
An aggregate's created event is done the same way: its `__init__` parameter names and the
aggregate class are looked up once, not per event. Any class this does not recognise (a
snapshot, an event class with its own `apply` or `mutate`) goes through its own `mutate`,
unchanged.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from typing import Any

from eventsourcing.domain import (
    CanInitAggregate,
    CanMutateAggregate,
    DecoratedFuncCaller,
    _init_mentions_id,
    decorated_funcs,
)
from eventsourcing.utils import resolve_topic

_Plan = tuple[Callable[..., None], tuple[str, ...], Callable[[dict[str, Any]], Any]] | None
_plans: dict[type, _Plan] = {}
# A created event's class -> (aggregate class, its __init__'s parameter names, whether
# __init__ takes the id), per originator topic; None: go through `mutate`.
_Creation = tuple[type[Any], tuple[str, ...], bool] | None
_creations: dict[tuple[type, str], _Creation] = {}


def apply_event(event: Any, aggregate: Any) -> Any:
    """`event.mutate(aggregate)`: the aggregate as the event leaves it."""
    cls = type(event)
    if aggregate is None:
        return _create(event)
    try:
        plan = _plans[cls]
    except KeyError:
        plan = _plans[cls] = _plan_for(cls)
    if (plan is None
            or event.originator_version != aggregate.version + 1
            or (event.originator_id is not aggregate.id  # one object: the reader's
                and event.originator_id != aggregate.id)):
        return event.mutate(aggregate)  # its own way, and its own errors
    method, names, arguments = plan
    values = event.__dict__
    try:
        positional = arguments(values)
    except KeyError:  # stored before a parameter with a default was added, or no getter
        method(aggregate, **{name: values[name] for name in names if name in values})
    else:  # (outside the try: a KeyError from the method itself is the method's)
        method(aggregate, *positional)
    aggregate.version = event.originator_version
    aggregate.modified_on = event.timestamp
    return aggregate


def _create(event: Any) -> Any:
    """`event.mutate(None)` for a created event: the aggregate it starts."""
    values = event.__dict__
    key = (type(event), values.get("originator_topic", ""))
    try:
        creation = _creations[key]
    except KeyError:
        creation = _creations[key] = _creation_for(*key)
    if creation is None:
        return event.mutate(None)
    aggregate_class, names, mentions_id = creation
    maker: Any = aggregate_class
    aggregate = maker.__new__(aggregate_class)
    if type(aggregate) is not aggregate_class:  # a __new__ of its own: `mutate` knows
        return event.mutate(None)
    aggregate.__base_init__(originator_id=values["originator_id"],
                            originator_version=values["originator_version"],
                            timestamp=values["timestamp"])
    kwargs = {name: values[name] for name in names if name in values}
    if mentions_id:
        kwargs["id"] = values["originator_id"]
    aggregate.__init__(**kwargs)  # as `mutate` calls it
    return aggregate


def _creation_for(cls: type, topic: str) -> _Creation:
    """What `CanInitAggregate.mutate` would look up for this event, when it would do no
    more than build the aggregate (no `apply` of the event's own)."""
    if (not issubclass(cls, CanInitAggregate) or cls.mutate is not CanInitAggregate.mutate
            or cls.apply is not CanMutateAggregate.apply
            or cls._as_dict is not CanMutateAggregate._as_dict or not topic):
        return None
    aggregate_class = resolve_topic(topic)
    base = tuple(inspect.signature(aggregate_class.__base_init__).parameters)
    if base != ("self", "originator_id", "originator_version", "timestamp"):
        return None  # a base class other than the one this copies
    names = tuple(inspect.signature(aggregate_class.__init__).parameters)
    return aggregate_class, names, aggregate_class in _init_mentions_id


def _plan_for(cls: type) -> _Plan:
    """The decorated method and its parameter names, when `mutate` would do no more than
    call it with the event's attributes of those names."""
    if (not issubclass(cls, DecoratedFuncCaller) or cls not in decorated_funcs
            or cls.mutate is not CanMutateAggregate.mutate
            or cls.apply is not DecoratedFuncCaller.apply
            or cls._as_dict is not CanMutateAggregate._as_dict
            or not _base_apply_is_empty(cls)):
        return None
    method = decorated_funcs[cls]
    parameters = list(inspect.signature(method).parameters.values())[1:]  # not `self`
    names = tuple(parameter.name for parameter in parameters)
    positional = (not hasattr(method, "__wrapped__")  # a signature borrowed: by name
                  and len(names) >= 2
                  and all(parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
                          for parameter in parameters))
    # The values in parameter order, in one C call; a missing one raises KeyError.
    return method, names, operator.itemgetter(*names) if positional else _no_getter


def _no_getter(values: dict[str, Any]) -> Any:
    raise KeyError("by name")


def _base_apply_is_empty(cls: type) -> bool:
    """`DecoratedFuncCaller.apply` ends with `super().apply(aggregate)`: that must reach
    only the base class's empty `apply`."""
    mro = cls.__mro__
    after = mro[mro.index(DecoratedFuncCaller) + 1:]
    owner = next((base for base in after if "apply" in base.__dict__), None)
    return owner is CanMutateAggregate
