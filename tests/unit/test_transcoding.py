"""The msgspec-decoded JSON must read exactly what eventsourcing's JSONTranscoder wrote."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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
