"""`shelf api`: build the application and serve it with uvicorn."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import uvicorn

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


def build_server(settings: ApiSettings) -> uvicorn.Server:
    host, port = parse_listen(settings.listen)
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
    app = create_app(contexts, strategy, Policy(settings.policy_file))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            access_log=False, server_header=False)
    return uvicorn.Server(config)


def serve(settings: ApiSettings) -> None:
    server = build_server(settings)
    try:
        server.run()
    finally:
        server.config.app.state.contexts.close()
