"""The `Change` of each stored event: the event decoded and its aggregate folded up to it.

The folded aggregates stay cached between batches: the next event of one is folded onto
the copy its previous event left, rather than loaded from the store again.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.application import Application

from adapters.eventstore import project_events
from adapters.folding import apply_event
from domain.host import Host
from domain.instance import Instance
from projections import quarantine
from projections.base import Change, is_utc_text, utc_text
from projections.reading import EventReader


class Folder:
    def __init__(self, app: Application[uuid.UUID], reader: EventReader) -> None:
        self.app, self.reader = app, reader
        self._aggregates: dict[uuid.UUID, Any] = {}
        self._last_at: dict[uuid.UUID, str] = {}  # each cached aggregate's last event time

    def change(self, row: tuple[Any, ...]) -> Change:
        event, stored_time = self.reader.decode(row)
        at = stored_time if is_utc_text(stored_time) else str(utc_text(event.timestamp))
        previous_at, state = self._fold(event)
        self._last_at[event.originator_id] = at
        aggregate_id = row[1] if self.reader.ids_are_text else str(event.originator_id)
        return Change(row[0], event, state, aggregate_id, at, previous_at)

    def drop_aggregate(self, stored_id: Any) -> None:
        self._aggregates.pop(quarantine.uuid_of(stored_id), None)

    def clear(self) -> None:
        self._aggregates.clear()
        self._last_at.clear()

    def _fold(self, event: Any) -> tuple[str | None, Any]:
        """(when the aggregate was last changed before `event`, the aggregate after it)."""
        version = event.originator_version
        cached = self._aggregates.get(event.originator_id)
        if version == 1:
            previous, state = None, apply_event(event, None)
        elif cached is not None and cached.version == version - 1:
            previous = self._last_at.get(event.originator_id) or utc_text(cached.modified_on)
            state = apply_event(event, cached)
        else:
            before = self._load_before(event.originator_id, version, cached)
            previous, state = utc_text(before.modified_on), apply_event(event, before)
        if isinstance(state, Instance | Host):
            self._aggregates[event.originator_id] = state
        return previous, state

    def _load_before(self, aggregate_id: uuid.UUID, version: int, cached: Any) -> Any:
        """The aggregate just before `version`. A cached copy that another process's
        catch-up left behind is brought forward with the events it missed (one query);
        else it is loaded (its snapshot and the events after it)."""
        if cached is not None and cached.version < version - 1:
            missed = self.app.events.get(aggregate_id, gt=cached.version, lte=version - 1)
            return project_events(cached, missed)
        return self.app.repository.get(aggregate_id, version=version - 1)
