"""The msgspec-decoded JSON must read exactly what eventsourcing's JSONTranscoder wrote."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    TranscodingNotRegisteredError,
    UUIDAsHex,
)

from adapters.transcoding import FastJSONTranscoder
from projections.base import is_utc_text, utc_text


def transcoders() -> tuple[JSONTranscoder, FastJSONTranscoder]:
    standard, fast = JSONTranscoder(), FastJSONTranscoder()
    for transcoder in (standard, fast):
        for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
            transcoder.register(transcoding)
    return standard, fast


STATES: list[Any] = [
    {"timestamp": datetime(2026, 11, 24, 3, 29, 54, 836057, tzinfo=UTC), "name": "vm-1",
     "vcpus": 2, "image_id": None, "volume_backed": False},
    {"fault": {"step": "Snapshot", "at": datetime(2026, 1, 1, tzinfo=UTC),
               "ids": [uuid.uuid4(), uuid.uuid4()]}, "price": Decimal("1.10")},
    {"nested": [[{"deep": uuid.uuid4()}], {"_type_": "not a tag", "_data_": 1, "x": 2}]},
    {"looks_tagged": {"_type_": "only one key"}, "text": "tab\there \u00e9 \"quoted\""},
    [datetime(2000, 1, 1, tzinfo=UTC), 1, "two"],
    datetime(1999, 12, 31, 23, 59, tzinfo=UTC),  # a tagged value at the top
    {"ratio": 0.5, "inf": float("inf"), "small": -float("inf")},  # not JSON, but Python's
]


@pytest.mark.parametrize("state", STATES)
def test_fast_decode_equals_the_standard_decode(state: Any) -> None:
    standard, fast = transcoders()
    encoded = standard.encode(state)
    assert fast.encode(state) == encoded  # writing is unchanged
    assert fast.decode(encoded) == standard.decode(encoded) == state


def test_nan_reads_as_the_standard_decoder_reads_it() -> None:
    standard, fast = transcoders()
    encoded = standard.encode({"nan": float("nan")})
    assert str(fast.decode(encoded)) == str(standard.decode(encoded)) == "{'nan': nan}"


def test_an_unregistered_type_is_refused_as_before() -> None:
    _, fast = transcoders()
    with pytest.raises(TranscodingNotRegisteredError):
        fast.decode(b'{"when": {"_type_": "martian_time", "_data_": "sol 3"}}')


@pytest.mark.parametrize("moment", [
    datetime(2026, 11, 24, 3, 29, 54, 836057, tzinfo=UTC),
    datetime(2026, 11, 24, 3, 29, 54, tzinfo=UTC),  # no microseconds: stored shorter
    datetime(2026, 11, 24, 4, 29, 54, 1, tzinfo=timezone(timedelta(hours=1))),
])
def test_a_stored_timestamp_text_is_used_only_when_it_is_utc_text(moment: datetime) -> None:
    standard, fast = transcoders()
    state, stored = fast.decode_state(standard.encode({"timestamp": moment, "name": "vm-1"}))
    assert state == {"timestamp": moment, "name": "vm-1"}
    assert stored == moment.isoformat()
    # What a reader writes: the stored text when it is already utc_text's, else formatted.
    at = stored if is_utc_text(stored) else utc_text(state["timestamp"])
    assert at == utc_text(moment)
    assert is_utc_text(stored) == (moment.microsecond != 0 and moment.utcoffset() == timedelta(0))


def test_decode_state_gives_no_text_for_a_timestamp_stored_otherwise() -> None:
    _, fast = transcoders()
    assert fast.decode_state(b'{"timestamp": "2026-11-24T03:29:54.836057+00:00"}')[1] is None
    assert fast.decode_state(b'{"name": "vm-1"}') == ({"name": "vm-1"}, None)
    assert fast.decode_state(b'[1, 2]') == ([1, 2], None)
