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
    auth: str = "standalone"
    policy_file: Path | None = None
    store_url: str | None = None
    data_dir: Path | None = None
    contexts: int = 8
    # standalone identity (api/standalone_auth.py)
    token_keys: str | None = None  # default $SHELF_TOKEN_KEYS, else DATA_DIR/token-keys
    token_lifetime: float = 3600.0
    revocation_refresh: float = 5.0
    # keystone identity (api/keystone_auth.py)
    keystone_url: str | None = None
    keystone_cache: float = 60.0
    keystone_cafile: str | None = None
    # TLS: without a certificate only loopback is served, unless insecure_http
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False


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
    if settings.auth == "noauth" and not is_loopback(host):  # before any strategy starts
        raise UsageError(f"--auth {settings.auth} listens only on loopback "
                         f"(127.0.0.0/8, ::1), not on {host}")
    check_transport(settings, host)
    contexts = ContextPool(settings.store_url, settings.data_dir, settings.contexts)
    strategy = make_strategy(contexts, settings)
    if strategy.loopback_only and not is_loopback(host):
        raise UsageError(f"--auth {settings.auth} listens only on loopback "
                         f"(127.0.0.0/8, ::1), not on {host}")
    return create_app(contexts, strategy, Policy(settings.policy_file))


def check_transport(settings: ApiSettings, host: str) -> None:
    """Passwords and tokens cross the network only under TLS, unless asked otherwise."""
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for path in (settings.tls_cert, settings.tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"no such file: {path}")
    if settings.tls_cert is None and not settings.insecure_http and not is_loopback(host):
        raise UsageError(f"refusing plain HTTP on {host}: give --tls-cert and --tls-key, "
                         "or --insecure-http")


def uvicorn_server(app: FastAPI, settings: ApiSettings) -> uvicorn.Server:
    host, port = parse_listen(settings.listen)
    return uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        server_header=False, ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key))


def serve(settings: ApiSettings) -> None:
    app = build_app(settings)
    try:
        uvicorn_server(app, settings).run()
    finally:
        app.state.contexts.close()
        close = getattr(app.state.identity, "close", None)
        if close is not None:
            close()
