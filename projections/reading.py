"""Read stored events in notification order and decode them, fast.

The projections read every event once; eventsourcing's recorder builds a dict and a
Notification per row and its mapper resolves each event's class again, which together
cost more than the folding. Here the rows come as plain tuples and each event class's
decoding is worked out once. Classes that need more than that (a `class_version` to
upcast from) and stores with a cipher or compressor go through eventsourcing's mapper.

On PostgreSQL the id and the state are read as text: building a UUID and a bytes object
per row costs about as much again as the rest of the fetch. Each aggregate's UUID is made
once and kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Mapper, Notification
from eventsourcing.utils import resolve_topic

from adapters.poison import is_event_fault
from projections.db import Database

# The tables eventsourcing's recorders keep the events in (the application is "shelf").
_COLUMNS = {
    "postgres": "notification_id, originator_id::text, originator_version, topic, {state}",
    "sqlite": "rowid, originator_id, originator_version, topic, state",
}
_FROM = {
    "postgres": " FROM shelf_events WHERE notification_id > ? ORDER BY notification_id LIMIT ?",
    "sqlite": " FROM stored_events WHERE rowid > ? ORDER BY rowid LIMIT ?",
}
IDS_KEPT = 500_000  # UUIDs kept for reuse; past that the cache starts again


class EventReader:
    def __init__(self, db: Database, mapper: Mapper[uuid.UUID]) -> None:
        self.db, self.mapper = db, mapper
        self._simple = mapper.cipher is None and mapper.compressor is None
        self._classes: dict[str, type | None] = {}  # None: decode through the mapper
        self._ids: dict[Any, uuid.UUID] = {}
        self._select = ""  # made at the first read, which can ask the server
        self._state_times = getattr(mapper.transcoder, "decode_state", None)
        # PostgreSQL's text of a UUID is str(uuid); SQLite's stored id is its hex.
        self.ids_are_text = db.backend == "postgres"

    def rows(self, after: int, limit: int) -> Sequence[tuple[Any, ...]]:
        """(position, originator_id, originator_version, topic, state), oldest first;
        originator_id as str(uuid) when `ids_are_text`, else as stored; state as text or
        bytes."""
        if not self._select:
            self._select = self._make_select()
        try:
            return self.db.rows(self._select, (after, limit))
        except Exception as error:
            bytes_select = self._make_select(as_text=False)
            if self._select == bytes_select or not is_event_fault(error):
                raise
            # A state that isn't UTF-8 (a poison event) fails the whole text read: this
            # batch as bytes, and that event's decoding fails alone.
            return self.db.rows(bytes_select, (after, limit))

    def _make_select(self, as_text: bool = True) -> str:
        """Stored JSON is UTF-8: read it as text, unless a cipher or compressor made it
        bytes, or the database's own encoding is not UTF-8 (text would be converted to it,
        and fail on characters it lacks)."""
        as_text = as_text and self._simple and (self.db.backend != "postgres" or self.db.query(
            "SHOW server_encoding")[0]["server_encoding"] == "UTF8")
        columns = _COLUMNS[self.db.backend].format(
            state="convert_from(state, 'UTF8')" if as_text else "state")
        return "SELECT " + columns + _FROM[self.db.backend]

    def decode(self, row: tuple[Any, ...]) -> tuple[Any, str | None]:
        """The row's event, and its timestamp as stored (text) when the transcoder can
        give it (None otherwise)."""
        position, originator_id, version, topic, state = row
        if topic not in self._classes:
            self._classes[topic] = self._plain_class(topic)
        cls = self._classes[topic]
        if cls is None:
            return self.mapper.to_domain_event(Notification(
                id=position, originator_id=self.aggregate_id(originator_id),
                originator_version=version, topic=topic, state=_bytes(state))), None
        if self._state_times is not None:
            values, stored_time = self._state_times(state)
        else:
            values, stored_time = self.mapper.transcoder.decode(_bytes(state)), None
        values["originator_id"] = self.aggregate_id(originator_id)
        values["originator_version"] = version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", values)
        return event, stored_time

    def aggregate_id(self, stored: Any) -> uuid.UUID:
        """The UUID of a stored originator id (text or UUID), one object per aggregate."""
        if type(stored) is uuid.UUID:
            return stored
        try:
            return self._ids[stored]
        except KeyError:
            if len(self._ids) >= IDS_KEPT:
                self._ids.clear()
            made = self._ids[stored] = uuid.UUID(stored)
            return made

    def _plain_class(self, topic: str) -> type | None:
        cls = resolve_topic(topic)
        return cls if self._simple and getattr(cls, "class_version", 1) == 1 else None


def _bytes(state: Any) -> bytes:
    return state.encode() if isinstance(state, str) else bytes(state)
