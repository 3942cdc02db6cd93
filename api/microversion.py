"""Compute API microversions: what the request asked for, within what we serve."""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_VERSION = (2, 1)
MAX_VERSION = (2, 96)
SERVICE = "compute"
NEW_HEADER = "openstack-api-version"
LEGACY_HEADER = "x-openstack-nova-api-version"
_VERSION = re.compile(r"^([1-9]\d*)\.(0|[1-9]\d*)$")


class VersionNotAcceptable(Exception):
    """Outside MIN_VERSION..MAX_VERSION (Nova's 406)."""


class BadVersion(Exception):
    """Not `X.Y` or `latest` (Nova's 400)."""


@dataclass(frozen=True, order=True)
class Microversion:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, text: str) -> bool:
        major, minor = text.split(".")
        return (self.major, self.minor) >= (int(major), int(minor))


def text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def requested(new_header: str | None, legacy_header: str | None) -> Microversion:
    """The version a request asks for: `OpenStack-API-Version: compute X.Y` wins over the
    legacy header; none at all is the minimum, as in Nova."""
    value = _from_new_header(new_header) if new_header else None
    if value is None and legacy_header:
        value = legacy_header.strip()
    if not value:
        return Microversion(*MIN_VERSION)
    if value.lower() == "latest":
        return Microversion(*MAX_VERSION)
    match = _VERSION.match(value)
    if match is None:
        raise BadVersion(f"Invalid API version request string: {value}")
    version = Microversion(int(match.group(1)), int(match.group(2)))
    if not Microversion(*MIN_VERSION) <= version <= Microversion(*MAX_VERSION):
        raise VersionNotAcceptable(
            f"Version {version} is not supported by the API. Minimum is "
            f"{text(MIN_VERSION)} and maximum is {text(MAX_VERSION)}.")
    return version


def _from_new_header(header: str) -> str | None:
    """`compute 2.91` (several services may be listed, comma-separated)."""
    for part in header.split(","):
        words = part.split()
        if len(words) == 2 and words[0].lower() == SERVICE:
            return words[1]
    return None
