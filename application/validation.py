"""Every value a request brings, checked before anything is recorded: one place for the
CLI (cli/checks.py) and the HTTP API.

Each check is a plain function that returns the value it accepted or raises
ValidationError: exit 2 on the CLI, a 400 from the API, with one line naming the field.
The grammar and the ranges are README.md's ("Names and ranges"); the sizes' bounds are
what every store and projection column can hold (domain/limits.py), so no accepted value
can make a store unreadable.
"""

from __future__ import annotations

import math
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from application.times import parse_time
from domain.errors import UsageError
from domain.limits import MAX_POSITION, MAX_SIZE, NAME_RULE, is_valid_name


class ValidationError(UsageError):
    """A value outside its grammar or range (exit 2; the API's 400 badRequest)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# The documented ranges: (lowest, highest), both included.
WAIT_SECONDS = (0.0, 7 * 86400.0)  # --timeout
THREADS = (1, 256)  # serve --threads
JOBS = (1, 64)  # projections rebuild --jobs
AUDIT_LIMIT = (0, 1_000_000)  # audit --limit (0 = all)
LIST_LIMIT = (0, 2**63 - 1)  # a list's limit (0 = all; the API caps it by its own rule)
POSITION = (0, MAX_POSITION)  # audit --after
SHUTDOWN_SECONDS = (0.0, 86400.0)  # serve --shutdown-timeout
RETRY_SECONDS = (0.1, 3600.0)  # serve --shutdown-retry-interval
OFFLOAD_SECONDS = (0.0, 10 * 365 * 86400.0)  # serve --shelved-offload-time, or -1
CONNECT_SECONDS = (0.001, 86400.0)  # --connect-timeout (adapters/libvirt_connection.py)
TOKEN_LIFETIME_SECONDS = (1.0, 365 * 86400.0)  # user rotate-keys --token-lifetime
TEXT_MAX = 255  # a reference (id or name), a user, an audit filter
URI_MAX = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# libvirt's DRIVER[+TRANSPORT]: shelf writes QEMU/KVM domains, and tests use libvirt's
# test driver; the transports are libvirt's remote ones.
_URI_SCHEME = re.compile(r"(?:qemu|test)(?:\+(?:unix|ssh|libssh|libssh2|tcp|tls|ext))?")


def _shown(value: Any) -> str:
    """The value as a message may quote it: escaped, and not too long."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _text(value: Any, field: str, longest: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"{field} must be text, not {_shown(value)}")
    if not value:
        raise ValidationError(field, f"{field} must not be empty")
    if _CONTROL.search(value):
        raise ValidationError(field, f"{field} {_shown(value)} holds a control character")
    if not value.isascii() and not _is_utf8(value):
        raise ValidationError(field, f"{field} {_shown(value)} is not valid UTF-8")
    if len(value) > longest:
        raise ValidationError(field, f"{field} is longer than {longest} characters")
    return value


def _is_utf8(value: str) -> bool:
    """Bytes that aren't UTF-8 reach Python as lone surrogates, which no store can write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---- names and references ---------------------------------------------------------------

def name(kind: str, value: Any, field: str | None = None) -> str:
    """A new instance's, host's or image's name: the documented grammar."""
    field = field or f"{kind} name"
    _text(value, field, TEXT_MAX)
    if not is_valid_name(value):
        raise ValidationError(field, f"bad {field} {_shown(value)}: use {NAME_RULE}")
    if kind == "instance" and _is_uuid(value):
        raise ValidationError(field, "an instance name can't be a UUID "
                                     "(it would shadow instance ids)")
    return str(value)


# Nova's flavor schema: an id is one URL path segment (no '/'), a name has no control
# characters and no surrounding blanks; otherwise no URL could show or delete the flavor.
_FLAVOR_ID = re.compile(r"[a-zA-Z0-9._-]([a-zA-Z0-9. _-]*[a-zA-Z0-9._-])?")
FLAVOR_ID_RULE = "letters, digits, '.', '_', '-' and inner spaces"


def flavor_name(value: Any, field: str = "flavor name") -> str:
    """A new flavor's name: Nova's (any text without control characters or surrounding
    blanks), not the instance-name grammar: Nova's clients make names like 'm1.small'."""
    text = _text(value, field, TEXT_MAX)
    if text != text.strip():
        raise ValidationError(field, f"{field} {_shown(text)} starts or ends with a blank")
    return text


def flavor_id(value: Any, field: str = "flavor id") -> str:
    """A new flavor's id: one URL path segment, as Nova's schema has it."""
    text = _text(value, field, TEXT_MAX)
    if not _FLAVOR_ID.fullmatch(text):
        raise ValidationError(field, f"bad {field} {_shown(text)}: use {FLAVOR_ID_RULE}")
    return text


def reference(value: Any, field: str) -> str:
    """What names something that exists (an id or a name), or a filter on such names:
    looked up, not created, so names recorded before the grammar still work."""
    return _text(value, field, TEXT_MAX)


def store_url(value: Any, field: str = "--store") -> str:
    """Parsed by adapters/eventstore.py; here only what no URL may hold."""
    return _text(value, field, URI_MAX)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# ---- numbers ----------------------------------------------------------------------------

def whole_number(value: Any, field: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if type(value) is not int or not low <= value <= high:
        raise ValidationError(
            field, f"{field} must be a whole number from {low} to {high}, not {_shown(value)}")
    return value


def size(value: Any, field: str) -> int:
    """vcpus, memory in MB, disk in GB: of an instance or a host's capacity."""
    return whole_number(value, field, (1, MAX_SIZE))


def seconds(value: Any, field: str, bounds: tuple[float, float],
            also: tuple[float, ...] = ()) -> float:
    low, high = bounds
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not (
            low <= number <= high or number in also):
        allowed = "".join(f"{other:.12g} or " for other in also)
        raise ValidationError(field, f"{field} must be {allowed}a number of seconds from "
                                     f"{low:.12g} to {high:.12g}, not {_shown(value)}")
    return float(number)


# ---- times ------------------------------------------------------------------------------

def moment(value: Any, field: str) -> str:
    """A TIME (ISO 8601 or relative, see application/times.py), as the projections store it."""
    text = _text(value, field, TEXT_MAX)
    try:
        return parse_time(text)
    except UsageError as error:
        raise ValidationError(field, f"{field}: {error}") from None


def time_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """--since and --until: each a TIME, and the first before the second."""
    start = moment(since, "--since") if since is not None else None
    end = moment(until, "--until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise ValidationError("--until", f"--since {start} is not before --until {end}")
    return start, end


# ---- URIs -------------------------------------------------------------------------------

def libvirt_uri(value: Any, field: str = "--uri") -> str:
    """DRIVER[+TRANSPORT]://[HOST[:PORT]]/PATH[?QUERY]; a test:/// file must exist (else
    libxml2 prints its own warnings on the way to failing)."""
    text = _text(value, field, URI_MAX)
    parts = urlsplit(text)
    usage = "use qemu[+TRANSPORT]://[HOST]/PATH, e.g. qemu:///system (or test:///FILE)"
    if any(character.isspace() for character in text):
        raise ValidationError(field, f"bad {field} {_shown(text)}: no spaces; {usage}")
    if not _URI_SCHEME.fullmatch(parts.scheme) or not text.startswith(f"{parts.scheme}://"):
        raise ValidationError(field, f"bad {field} {_shown(text)}: {usage}")
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        raise ValidationError(field, f"bad {field} {_shown(text)}: the port must be a number "
                                     "from 0 to 65535") from None
    if parts.scheme == "test" and parts.path != "/default":
        path = Path(unquote(parts.path))
        if not path.is_file():
            raise ValidationError(field, f"bad {field} {_shown(text)}: no such file {path}")
    return text
