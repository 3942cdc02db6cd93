"""The token keys: Fernet keys (AES-128-CBC + HMAC-SHA256, from `cryptography`) in a
directory outside the event store, one file per key, named by its creation time.

The newest key signs; every key in the directory verifies. Rotating adds a new key and
drops only keys that can no longer have signed a live token: a key stopped signing when
its successor was made, so once that is longer ago than the longest token lifetime, no
token it signed is still valid. So rotation never cuts a live token short.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from domain.errors import UsageError

SUFFIX = ".key"


@dataclass(frozen=True)
class KeyFile:
    created_ns: int
    path: Path


class KeyRing:
    """The keys of one directory; `signer()` is reloaded when the directory changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded_state: tuple[int, ...] | None = None
        self._signer: MultiFernet | None = None

    def ensure(self) -> None:
        """Create the directory (owner only) and a first key, when there is none."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.files():
            self._write_key()

    def files(self) -> list[KeyFile]:
        """Newest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.glob(f"*{SUFFIX}"):
            stem = path.name[: -len(SUFFIX)]
            if stem.isdigit():
                found.append(KeyFile(int(stem), path))
        return sorted(found, key=lambda key: key.created_ns, reverse=True)

    def signer(self) -> MultiFernet:
        """Encrypts with the newest key, decrypts with any; re-read if keys changed."""
        files = self.files()
        state = tuple(key.created_ns for key in files)
        if self._signer is None or state != self._loaded_state:
            if not files:
                raise UsageError(f"no token keys in {self.directory} (start `shelf api` once, "
                                 "or run `shelf user rotate-keys`)")
            self._signer = MultiFernet([Fernet(key.path.read_bytes().strip())
                                        for key in files])
            self._loaded_state = state
        return self._signer

    def rotate(self, max_token_lifetime: float) -> tuple[Path, list[Path]]:
        """A new signing key; the keys no live token can have been signed with go."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = self._write_key()
        now = time.time_ns()
        files = self.files()
        dropped = []
        for newer, older in itertools.pairwise(files):
            if now - newer.created_ns > max_token_lifetime * 1e9:
                older.path.unlink()
                dropped.append(older.path)
        return new, dropped

    def _write_key(self) -> Path:
        path = self.directory / f"{time.time_ns()}{SUFFIX}"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(Fernet.generate_key())
        return path
