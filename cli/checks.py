"""Every parsed argument checked by application/validation.py before a command runs, so
a refused value records nothing (`boot --timeout -5` is refused before the boot is).

Checks go by the argument's name (its argparse `dest`), so a new command's `--host` or
`--timeout` is checked like every other.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from application import validation as v
from domain.limits import MAX_SIZE

# Commands that create what they name; every other NAME refers to something that exists.
NAMES_MADE_BY = {("host", "add"): "host", ("boot", None): "instance",
                 ("image", "import"): "image", ("flavor", "create"): "flavor"}


def _option(dest: str) -> str:
    return f"--{dest.replace('_', '-')}"


def _references(value: Any, field: str) -> None:
    for item in value:
        v.reference(item, field)


# dest -> the check of its value (given the value and the option's name)
CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "instance": v.reference, "host": v.reference, "image": v.reference,
    "action": v.reference, "user": v.reference, "hosts": _references,
    "project": v.reference, "flavor": v.reference,
    "flavor_disk_gb": lambda value, field: v.whole_number(value, field, (0, MAX_SIZE)),
    "vcpus": v.size, "memory_mb": v.size, "disk_gb": v.size, "uri": v.libvirt_uri,
    "timeout": lambda value, field: v.seconds(value, field, v.WAIT_SECONDS),
    "threads": lambda value, field: v.whole_number(value, field, v.THREADS),
    "jobs": lambda value, field: v.whole_number(value, field, v.JOBS),
    "limit": lambda value, field: v.whole_number(value, field, v.AUDIT_LIMIT),
    "after": lambda value, field: v.whole_number(value, field, v.POSITION),
    "connect_timeout": lambda value, field: v.seconds(value, field, v.CONNECT_SECONDS),
    "shutdown_timeout": lambda value, field: v.seconds(value, field, v.SHUTDOWN_SECONDS),
    "shutdown_retry_interval": lambda value, field: v.seconds(value, field, v.RETRY_SECONDS),
    "shelved_offload_time": lambda value, field: v.seconds(value, field, v.OFFLOAD_SECONDS,
                                                           also=(-1,)),
    "as_of": v.moment, "id": v.flavor_id,
    "token_lifetime": lambda value, field: v.seconds(value, field, v.TOKEN_LIFETIME_SECONDS),
}
POSITIONAL = {"instance": "INSTANCE", "name": "NAME"}


def check_arguments(args: argparse.Namespace) -> None:
    """Raise ValidationError (exit 2) for the first value out of its grammar or range."""
    values = vars(args)
    if values.get("store") is not None:
        v.store_url(values["store"])
    _check_environment(values)
    kind = NAMES_MADE_BY.get(command_of(args))
    if values.get("name") is not None:
        if kind == "flavor":  # Nova's grammar, not the instance names'
            v.flavor_name(values["name"], "flavor name")
        elif kind is not None:
            v.name(kind, values["name"], f"{kind} name")
        else:
            v.reference(values["name"], "NAME")
    for dest, check in CHECKS.items():
        if values.get(dest) is not None:
            positional = _is_positional(args, dest)
            check(values[dest], POSITIONAL[dest] if positional else _option(dest))
    v.time_window(values.get("since"), values.get("until"))


def _check_environment(values: dict[str, Any]) -> None:
    """$SHELF_STORE stands for --store when that isn't given, and $SHELF_PROJECT for a
    boot's --project: they are checked as those are."""
    if values.get("store") is None and os.environ.get("SHELF_STORE"):
        v.store_url(os.environ["SHELF_STORE"], "SHELF_STORE")
    if values.get("project") is None and os.environ.get("SHELF_PROJECT"):
        v.reference(os.environ["SHELF_PROJECT"], "SHELF_PROJECT")


def command_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """("host", "add"), ("boot", None): the command and its subcommand, if it has one."""
    command: str = args.command
    return command, getattr(args, f"{command}_command", None)


def _is_positional(args: argparse.Namespace, dest: str) -> bool:
    """`shelve INSTANCE` vs `audit --instance`: only the name in the message differs."""
    return dest == "instance" and getattr(args, "command", None) != "audit"
