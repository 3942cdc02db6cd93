"""Which tokens are revoked, kept in memory and refreshed from the store every few seconds.

A revocation made through this process counts at once; one made by another process (the
CLI deleting a user, another API worker) counts here within `interval` seconds (default
5): that is the documented bound. Checking a token reads only this memory.
"""

from __future__ import annotations

import threading
from datetime import datetime

from application.auth.tokens import Token
from domain.identity import REVOCATIONS_ID, Revocations
from domain.service import Repository, find

DEFAULT_INTERVAL = 5.0


class RevocationList:
    def __init__(self, repo: Repository, interval: float = DEFAULT_INTERVAL) -> None:
        self.repo = repo
        self.interval = interval
        self._tokens: dict[str, datetime] = {}
        self._subjects: dict[str, datetime] = {}  # subject -> tokens issued up to it revoked
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Read the store's list (only its new events: the aggregate cache fast-forwards)."""
        revocations = find(self.repo, REVOCATIONS_ID, Revocations)
        if revocations is None:
            return
        tokens = dict(revocations.tokens)
        subjects = {subject: span[0] for subject, span in revocations.subjects.items()}
        # Whole replacements: a reader in another thread sees the old or the new dict.
        self._tokens, self._subjects = tokens, subjects

    def add(self, revocations: Revocations) -> None:
        """What this process just recorded, counted before the next refresh."""
        self._tokens = {**self._tokens, **revocations.tokens}
        self._subjects = {**self._subjects, **{
            subject: span[0] for subject, span in revocations.subjects.items()}}

    def is_revoked(self, token: Token) -> bool:
        if token.token_id in self._tokens:
            return True
        identity = token.identity
        for subject in (f"user:{identity.user_id}", f"credential:{identity.credential_id}"):
            before = self._subjects.get(subject)
            if before is not None and token.issued_at <= before:
                return True
        return False

    def start(self) -> None:
        """Refresh now, then every `interval` seconds in a daemon thread."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="revocations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 1)

    def _run(self) -> None:
        from adapters.logs import get_logger

        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception as error:  # the store may be away: keep the last list
                get_logger("shelf.identity").warning("revocations.refresh_failed",
                                                     error=str(error))
