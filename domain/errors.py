"""Errors the domain raises; the CLI maps each to one line and an exit code."""

from __future__ import annotations


class ShelfError(Exception):
    """Base of every error an operator may see."""

    exit_code = 1


class Conflict(ShelfError):
    """Refused in this state, or lost a race (Nova's 409)."""

    exit_code = 4


class NotFound(ShelfError):
    """No such instance, host or image."""

    exit_code = 3


class UsageError(ShelfError):
    """The request itself is malformed."""

    exit_code = 2


class NoRoom(ShelfError):
    """No host has the vcpus, memory or disk the instance needs."""

    exit_code = 1
