"""TIME arguments: ISO 8601 (UTC unless it says otherwise) or relative to now (`-2h`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from domain.errors import UsageError
from projections.base import utc_text

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> str:
    """The moment as the projections store it; a UsageError (exit 2) when unreadable."""
    now = now or datetime.now(UTC)
    if text == "now":
        return str(utc_text(now))
    try:
        relative = _RELATIVE.match(text)
        if relative:
            amount, unit = float(relative.group(1)), _UNITS[relative.group(2)]
            return str(utc_text(now - timedelta(**{unit: amount})))
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return str(utc_text(moment))
    except (ValueError, OverflowError):  # unreadable, or outside the years 1 to 9999
        raise UsageError(f"bad time {text!r}: use ISO 8601 (2026-11-24T09:30:00Z) "
                         "or a relative -30s, -15m, -2h, -3d, -1w") from None
