"""`shelf api`: build the application and serve it with uvicorn."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.deps import ContextPool
from api.identity import STRATEGIES
from api.policy import Policy
from domain.errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:8774"


@dataclass(frozen=True)
class ApiSettings:
    listen: str = DEFAULT_LISTEN
    auth: str = "noauth"
    policy_file: Path | None = None
    store_url: str | None = None
    data_dir: Path | None = None
    contexts: int = 8


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen must be HOST:PORT, not {listen!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(settings: ApiSettings) -> FastAPI:
    """The application `settings` describe; its `state.contexts` is closed by the caller."""
    host, _ = parse_listen(settings.listen)
    make_strategy = STRATEGIES.get(settings.auth)
    if make_strategy is None:
        raise UsageError(f"--auth {settings.auth} is not available yet")
    if settings.policy_file is not None and not settings.policy_file.is_file():
        raise UsageError(f"no such policy file: {settings.policy_file}")
    contexts = ContextPool(settings.store_url, settings.data_dir, settings.contexts)
    strategy = make_strategy(contexts)
    if strategy.loopback_only and not is_loopback(host):
        raise UsageError(f"--auth {settings.auth} listens only on loopback "
                         f"(127.0.0.0/8, ::1), not on {host}")
    return create_app(contexts, strategy, Policy(settings.policy_file))


def uvicorn_server(app: FastAPI, listen: str) -> uvicorn.Server:
    host, port = parse_listen(listen)
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                         access_log=False, server_header=False))


def serve(settings: ApiSettings) -> None:
    app = build_app(settings)
    try:
        uvicorn_server(app, settings.listen).run()
    finally:
        app.state.contexts.close()
