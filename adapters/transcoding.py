"""eventsourcing's JSON format, decoded by msgspec.

Stored events stay exactly as eventsourcing's JSONTranscoder writes them (custom types as
`{"_type_": name, "_data_": value}`), so every existing store stays readable and writable
by either transcoder. Only decoding changes: msgspec parses the JSON several times faster
than the standard library, then the tagged values are restored the way JSONTranscoder's
object hook does (innermost first). Encoding keeps JSONTranscoder's encoder, because
msgspec would write datetimes and UUIDs as plain strings that read back as strings.
"""

from __future__ import annotations

from typing import Any

import msgspec
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError

_DECODER = msgspec.json.Decoder()


class FastJSONTranscoder(JSONTranscoder):
    def decode(self, data: bytes) -> Any:
        try:
            value = _DECODER.decode(data)
        except msgspec.DecodeError:  # NaN and Infinity: Python's JSON, not msgspec's
            return super().decode(data)
        if type(value) is dict and "_type_" not in value:  # an event's state: in place
            for key, item in value.items():
                if type(item) is dict:
                    value[key] = self._restore_dict(item)
                elif type(item) is list:
                    value[key] = self._restore(item)
            return value
        return self._restore(value)

    def _restore_dict(self, value: dict[str, Any]) -> Any:
        data = value.get("_data_")
        if len(value) == 2 and type(data) is str and "_type_" in value:
            return self._transcoding(value["_type_"]).decode(data)  # the common case
        return self._restore(value)

    def _restore(self, value: Any) -> Any:
        if type(value) is list:
            return [self._restore(item) for item in value]
        if type(value) is not dict:
            return value
        restored = {key: self._restore(item) for key, item in value.items()}
        if len(restored) == 2 and "_type_" in restored and "_data_" in restored:
            return self._transcoding(restored["_type_"]).decode(restored["_data_"])
        return restored

    def _transcoding(self, name: str) -> Any:
        try:
            return self.names[name]
        except KeyError:
            raise TranscodingNotRegisteredError(
                f"Data serialized with name {name!r} is not deserializable: "
                "no transcoding is registered for it") from None
