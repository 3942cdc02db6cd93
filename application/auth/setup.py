"""Where the token keys live, and the identity pieces wired together."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from application.auth.keys import KeyRing
from application.auth.login import Authenticator
from application.auth.revocation import DEFAULT_INTERVAL, RevocationList
from application.auth.tokens import DEFAULT_LIFETIME, TokenCodec
from domain.service import Repository


def key_directory(data_dir: Path, configured: str | None = None) -> Path:
    """--token-keys, else $SHELF_TOKEN_KEYS, else DATA_DIR/token-keys (never the store)."""
    return Path(configured or os.environ.get("SHELF_TOKEN_KEYS") or data_dir / "token-keys")


def standalone_authenticator(
    repo: Repository, keys: Path, lifetime: timedelta = DEFAULT_LIFETIME,
    refresh_interval: float = DEFAULT_INTERVAL,
) -> Authenticator:
    """Keys created on first start; the revocation list not yet refreshing (`start()` it)."""
    ring = KeyRing(keys)
    ring.ensure()
    return Authenticator(repo, TokenCodec(ring, lifetime),
                         RevocationList(repo, refresh_interval))
