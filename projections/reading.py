"""Read stored events in notification order and decode them, fast.

The projections read every event once; eventsourcing's recorder builds a dict and a
Notification per row and its mapper resolves each event's class again, which together
cost more than the folding. Here the rows come as plain tuples and each event class's
decoding is worked out once. Classes that need more than that (a `class_version` to
upcast from) and stores with a cipher or compressor go through eventsourcing's mapper.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import resolve_topic

from projections.db import Database

# The tables eventsourcing's recorders keep the events in (the application is "shelf").
_SELECT = {
    "postgres": "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM shelf_events WHERE notification_id > ? ORDER BY notification_id "
                "LIMIT ?",
    "sqlite": "SELECT rowid, originator_id, originator_version, topic, state "
              "FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?",
}


class EventReader:
    def __init__(self, db: Database, mapper: Mapper[uuid.UUID]) -> None:
        self.db, self.mapper = db, mapper
        self._simple = mapper.cipher is None and mapper.compressor is None
        self._classes: dict[str, type | None] = {}  # None: decode through the mapper

    def rows(self, after: int, limit: int) -> Sequence[tuple[Any, ...]]:
        """(position, originator_id, originator_version, topic, state), oldest first."""
        return self.db.rows(_SELECT[self.db.backend], (after, limit))

    def decode(self, row: tuple[Any, ...]) -> Any:
        position, originator_id, version, topic, state = row
        if topic not in self._classes:
            self._classes[topic] = self._plain_class(topic)
        cls = self._classes[topic]
        if cls is None:
            return self.mapper.to_domain_event(Notification(
                id=position, originator_id=originator_id, originator_version=version,
                topic=topic, state=bytes(state)))
        values = self.mapper.transcoder.decode(bytes(state))
        values["originator_id"] = (originator_id if type(originator_id) is uuid.UUID
                                   else uuid.UUID(originator_id))
        values["originator_version"] = version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", values)
        return event

    def _plain_class(self, topic: str) -> type | None:
        cls = resolve_topic(topic)
        return cls if self._simple and getattr(cls, "class_version", 1) == 1 else None
