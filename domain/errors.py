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


class HostNotFound(NotFound):
    """No such host: the API tells it from a missing server (Nova's 400 on unshelve)."""


class UsageError(ShelfError):
    """The request itself is malformed."""

    exit_code = 2


class NoRoom(ShelfError):
    """No host has the vcpus, memory or disk the instance needs."""

    exit_code = 1


class Unreadable(ShelfError):
    """An aggregate whose stored events can't be decoded or folded: its events stay in
    the store, and the rest of the store goes on being read and served without it."""

    exit_code = 1

    def __init__(self, aggregate_id: object, reason: str) -> None:
        super().__init__(f"{aggregate_id} can't be read from the store ({reason}); "
                         f"its events stay recorded, see `shelf projections status`")
        self.aggregate_id = aggregate_id
        self.reason = reason
