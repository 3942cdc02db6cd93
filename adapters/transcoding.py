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
    def decode(self, data: bytes | str) -> Any:
        try:
            value = _DECODER.decode(data)
        except msgspec.DecodeError:  # NaN and Infinity: Python's JSON, not msgspec's
            return super().decode(data.encode() if isinstance(data, str) else data)
        return self._restore_top(value)

    def decode_state(self, data: bytes | str) -> tuple[Any, str | None]:
        """An event's state, and its `timestamp` as it was stored (the text of a tagged
        datetime), which a reader that wants the text can use instead of formatting the
        datetime again. The text is None when the timestamp is not stored that way."""
        try:
            value = _DECODER.decode(data)
        except msgspec.DecodeError:
            return self.decode(data), None
        stamp = value.get("timestamp") if type(value) is dict else None
        text = (stamp.get("_data_") if type(stamp) is dict
                and stamp.get("_type_") == "datetime_iso" else None)
        return self._restore_top(value), text if type(text) is str else None

    def _restore_top(self, value: Any) -> Any:
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
