"""A host's libvirt connection and the translation of its errors.

`HostConnection` owns one long-lived connection (reopened once when libvirtd drops it) and
the lookups every part of a host driver shares. `operation` makes a method a host step:
the host is prepared first, a broken connection is reopened and the call retried once, and
any failure becomes one line, "host <name>: <step>: <reason>", as a `HypervisorError` (or
`HostUnreachable`, `ImageNotFound`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import libvirt

from adapters.disk_files import DiskFileError
from adapters.libvirt_connection import ConnectionBounds, is_unreachable, open_connection
from adapters.libvirt_xml import domain_name
from adapters.logs import get_logger
from domain.ports import HostUnreachable, HypervisorError, ImageNotFound
from domain.store_identity import StoreMark

log = get_logger()

P = ParamSpec("P")
R = TypeVar("R")
HostT = TypeVar("HostT", bound="HostConnection")


class Refusal(Exception):
    """The host's state does not allow the step; the operation wrapper adds host and step."""


class MissingImage(Refusal):
    """The image file a step needs is not there (becomes ImageNotFound)."""


class UnknownHost(HostUnreachable, KeyError):
    """No URI is registered for the host name (it was never added, or removed): as
    unreachable as a host can be. A KeyError too, for lookups that expect one."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def one_line(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        text = exc.get_error_message() or str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc)
    return " ".join(str(text).split())


def operation(
    what: str,
) -> Callable[[Callable[Concatenate[HostT, P], R]], Callable[Concatenate[HostT, P], R]]:
    """Make a method a host operation: the host is prepared first, a broken connection is
    reopened and the call retried once, and any failure becomes a one-line HypervisorError
    "host <name>: <what>: <reason>" (`what` is formatted with the call's arguments)."""

    def decorate(method: Callable[Concatenate[HostT, P], R]) -> Callable[Concatenate[HostT, P], R]:
        signature = inspect.signature(method)

        @functools.wraps(method)
        def run(self: HostT, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return self._run_twice(functools.partial(method, self, *args, **kwargs))
            except (libvirt.libvirtError, OSError, Refusal, DiskFileError) as exc:
                step = what.format(**signature.bind(self, *args, **kwargs).arguments)
                error = error_class(exc)
                raise error(f"host {self.name}: {step}: {one_line(exc)}") from exc

        return run

    return decorate


def error_class(exc: Exception) -> type[HypervisorError]:
    if isinstance(exc, MissingImage):
        return ImageNotFound
    if isinstance(exc, libvirt.libvirtError) and is_unreachable(exc):
        return HostUnreachable
    return HypervisorError


def is_missing(exc: libvirt.libvirtError, code: int) -> bool:
    return bool(exc.get_error_code() == code)


def _ignore_libvirt_error(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr by default; ours are raised and logged instead."""


class HostConnection:
    """One host's connection, its preparation on first use, and shared lookups."""

    def __init__(
        self, name: str, uri: str, data_dir: Path, bounds: ConnectionBounds | None = None,
        mark: StoreMark | None = None,
    ) -> None:
        self.name = name
        self.uri = uri
        self.data_dir = data_dir
        self.bounds = bounds or ConnectionBounds.from_env()
        self.mark = mark  # None: a driver outside any store (tests, clean-ups): old names
        self._lock = threading.RLock()
        self._closed = False
        self._ready = False
        self._conn = self._connect()

    @property
    def conn(self) -> libvirt.virConnect:
        return self._conn

    def _connect(self) -> libvirt.virConnect:
        libvirt.registerErrorHandler(_ignore_libvirt_error, None)
        try:
            return open_connection(self.uri, self.bounds)
        except HostUnreachable as exc:
            raise HostUnreachable(f"host {self.name}: {exc}") from exc
        except libvirt.libvirtError as exc:
            message = f"host {self.name}: connect to {self.uri}: {one_line(exc)}"
            raise HypervisorError(message) from exc

    def _can_reconnect(self) -> bool:
        return True

    def _connection_broken(self, exc: libvirt.libvirtError) -> bool:
        if not self._can_reconnect():
            return False
        if exc.get_error_code() == libvirt.VIR_ERR_RPC:
            return True
        try:
            return not self._conn.isAlive()
        except libvirt.libvirtError:
            return True

    def _reconnect(self) -> None:
        with self._lock:
            log.warning("libvirt connection broken; reconnecting", host=self.name, uri=self.uri)
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()  # it is broken already
            self._conn = self._connect()

    def _run_twice(self, call: Callable[[], R]) -> R:
        if self._closed:
            raise Refusal("the host's connection is closed")
        self.ensure_ready()
        try:
            return call()
        except libvirt.libvirtError as exc:
            if not self._connection_broken(exc):
                raise
        self._reconnect()
        return call()

    def ensure_ready(self) -> None:
        """Prepare the host on first use (`_prepare`), once per connection object."""
        with self._lock:
            if self._ready:
                return
            try:
                self._prepare()
            except (libvirt.libvirtError, OSError, Refusal) as exc:
                raise error_class(exc)(
                    f"host {self.name}: prepare {self._preparing()}: {one_line(exc)}"
                ) from exc
            self._ready = True

    def _prepare(self) -> None:
        """What a host needs before its first step (pools, networks)."""

    def _preparing(self) -> str:
        return "host"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.close()
            except libvirt.libvirtError as exc:
                log.warning("closing libvirt connection failed", host=self.name, error=str(exc))

    # --- lookups shared by domains and storage ----------------------------------------------

    def _find_domain(self, instance_id: str) -> libvirt.virDomain | None:
        try:
            return self._conn.lookupByName(domain_name(instance_id))
        except libvirt.libvirtError as exc:
            if is_missing(exc, libvirt.VIR_ERR_NO_DOMAIN):
                return None
            raise

    def _require_domain(self, instance_id: str) -> libvirt.virDomain:
        domain = self._find_domain(instance_id)
        if domain is None:
            raise Refusal(f"no domain {domain_name(instance_id)}")
        return domain
