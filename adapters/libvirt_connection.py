"""Connections to libvirt that can't hang on a host that never answers.

libvirt-python's `open` has no timeout: against a daemon that accepts the TCP connection
and then says nothing, it waits for the first RPC reply for ever (seen here with
`qemu+tcp://` to a silent listener, with or without an event loop). Nor is there a URI
parameter for it. So the open runs in a thread of its own, and the caller waits for it
`connect_timeout` seconds: should it not answer by then, the thread is left to end on its
own (it closes what it opens after that), and the caller gets `HostUnreachable`.

Once open, a connection is watched by libvirt's keepalive (`virConnectSetKeepAlive`): a
ping every `keepalive_interval` seconds, and after `keepalive_count` unanswered ones libvirt
closes the connection, and a call waiting on it fails ("connection closed due to keepalive
timeout"). A daemon busy with a long call (a copy of a large disk) still answers pings
from its event loop, so a slow step is not cut short, but a silent host is. Keepalive
needs libvirt's event loop running in the process: one daemon thread runs it.

The bounds come from SHELF_LIBVIRT_CONNECT_TIMEOUT (seconds, 30),
SHELF_LIBVIRT_KEEPALIVE_INTERVAL (seconds, 5) and SHELF_LIBVIRT_KEEPALIVE_COUNT (5).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import libvirt

from adapters.logs import get_logger
from domain.errors import UsageError
from domain.ports import HostUnreachable

log = get_logger()
N = TypeVar("N", int, float)

CONNECT_TIMEOUT_ENV = "SHELF_LIBVIRT_CONNECT_TIMEOUT"
KEEPALIVE_INTERVAL_ENV = "SHELF_LIBVIRT_KEEPALIVE_INTERVAL"
KEEPALIVE_COUNT_ENV = "SHELF_LIBVIRT_KEEPALIVE_COUNT"

# Errors of libvirt's RPC layer that mean the daemon can't be reached or stopped answering
# (refused, reset, "client socket is closed", "connection closed due to keepalive
# timeout"); an RPC-layer authentication failure is not one of them.
_UNREACHABLE_CODES = frozenset({
    libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
})


@dataclass(frozen=True)
class ConnectionBounds:
    connect_timeout: float = 30.0
    keepalive_interval: int = 5
    keepalive_count: int = 5

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, connect_timeout: float | None = None
    ) -> ConnectionBounds:
        """The bounds the environment sets (an explicit `connect_timeout` wins)."""
        env = os.environ if environ is None else environ
        default = cls()
        timeout = connect_timeout if connect_timeout is not None else _number(
            env, CONNECT_TIMEOUT_ENV, float, default.connect_timeout)
        bounds = cls(
            connect_timeout=timeout,
            keepalive_interval=_number(env, KEEPALIVE_INTERVAL_ENV, int,
                                       default.keepalive_interval),
            keepalive_count=_number(env, KEEPALIVE_COUNT_ENV, int, default.keepalive_count),
        )
        bounds.check()
        return bounds

    def check(self) -> None:
        if not 0 < self.connect_timeout <= 86400:
            raise UsageError(f"the libvirt connect timeout must be more than 0 and at most "
                             f"86400 seconds, not {self.connect_timeout:g}")
        if not 1 <= self.keepalive_interval <= 3600 or not 1 <= self.keepalive_count <= 100:
            raise UsageError(
                f"the libvirt keepalive interval must be 1 to 3600 s and its count 1 to 100, "
                f"not {self.keepalive_interval} and {self.keepalive_count}")


def _number(env: Mapping[str, str], name: str, kind: type[N], default: N) -> N:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise UsageError(f"{name} must be a number, not {text!r}") from None


def is_unreachable(exc: libvirt.libvirtError) -> bool:
    """Whether a libvirt error says the daemon can't be reached or stopped answering."""
    return bool(exc.get_error_domain() == libvirt.VIR_FROM_RPC
                and exc.get_error_code() in _UNREACHABLE_CODES)


def one_line(exc: libvirt.libvirtError) -> str:
    return " ".join(str(exc.get_error_message() or exc).split())


def open_connection(uri: str, bounds: ConnectionBounds) -> libvirt.virConnect:
    """A connection to `uri`, opened within `bounds.connect_timeout`, with keepalive on.

    Raises HostUnreachable when the daemon can't be reached or doesn't answer in time, and
    libvirt's own error for any other refusal (a bad URI, an authentication failure)."""
    start_event_loop()
    attempt = _Attempt(uri)
    # (Should it finish just as the wait ends, abandon() says so, and its result stands.)
    if not attempt.finished.wait(bounds.connect_timeout) and attempt.abandon():
        raise HostUnreachable(
            f"connect to {uri}: no answer within {bounds.connect_timeout:g} s "
            f"({CONNECT_TIMEOUT_ENV})")
    if attempt.error is not None:
        if isinstance(attempt.error, libvirt.libvirtError) and is_unreachable(attempt.error):
            message = f"connect to {uri}: {one_line(attempt.error)}"
            raise HostUnreachable(message) from attempt.error
        raise attempt.error
    assert attempt.connection is not None
    _keep_alive(attempt.connection, uri, bounds)
    return attempt.connection


class _Attempt:
    """One `libvirt.open` in a thread of its own, which its caller may stop waiting for."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.finished = threading.Event()
        self.connection: libvirt.virConnect | None = None
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._abandoned = False
        threading.Thread(target=self._open, name="libvirt-connect", daemon=True).start()

    def _open(self) -> None:
        try:
            connection = libvirt.open(self.uri)
        except Exception as exc:  # any: a thread that dies unheard would read as a silent host
            self.error = exc
            connection = None
        with self._lock:
            if self._abandoned and connection is not None:
                _close_quietly(connection, self.uri)  # nobody waits for it any more
                connection = None
            self.connection = connection
            self.finished.set()

    def abandon(self) -> bool:
        """Stop waiting; False if it finished meanwhile (then its result stands)."""
        with self._lock:
            if self.finished.is_set():
                return False
            self._abandoned = True
            return True


def _close_quietly(connection: libvirt.virConnect, uri: str) -> None:
    try:
        connection.close()
    except libvirt.libvirtError as exc:
        log.info("closing a late libvirt connection failed", uri=uri, error=one_line(exc))
    else:
        log.info("closed a libvirt connection that opened after its timeout", uri=uri)


def _keep_alive(connection: libvirt.virConnect, uri: str, bounds: ConnectionBounds) -> None:
    """Turn keepalive on where the driver has it (a remote or daemon-served one; not the
    in-process test driver, where nothing can go silent)."""
    try:
        connection.setKeepAlive(bounds.keepalive_interval, bounds.keepalive_count)
    except libvirt.libvirtError as exc:
        log.debug("libvirt keepalive not available", uri=uri, error=one_line(exc))


_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """libvirt's default event loop, run by one daemon thread: keepalive needs it. Once per
    process, before the first connection."""
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def _run_event_loop() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.warning("libvirt event loop iteration failed")
