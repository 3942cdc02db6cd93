"""Repeated failed logins for one user name are slowed down.

After `free` failures within `window` seconds, each further attempt for that name (right
or wrong) waits `base * 2**(n - free)` seconds, at most `cap`, before it is checked; a
success clears the count. Kept in memory per process: it slows guessing, it is not a
lock-out (which would let anyone lock a user out).
"""

from __future__ import annotations

import threading
import time

FREE_FAILURES = 3
BASE_DELAY = 0.5
MAX_DELAY = 8.0
WINDOW = 900.0
MAX_NAMES = 10_000  # bounded memory under a spray of made-up names


class LoginThrottle:
    def __init__(self, free: int = FREE_FAILURES, base: float = BASE_DELAY,
                 cap: float = MAX_DELAY, window: float = WINDOW) -> None:
        self.free, self.base, self.cap, self.window = free, base, cap, window
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def delay(self, name: str) -> float:
        """Seconds to wait before checking an attempt for `name`."""
        with self._lock:
            recent = self._recent(name)
        excess = len(recent) - self.free
        return 0.0 if excess < 0 else min(self.cap, self.base * 2**excess)

    def failed(self, name: str) -> None:
        with self._lock:
            recent = self._recent(name)
            recent.append(time.monotonic())
            self._failures[name] = recent
            if len(self._failures) > MAX_NAMES:  # drop the oldest names first
                del self._failures[next(iter(self._failures))]

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)

    def _recent(self, name: str) -> list[float]:
        cutoff = time.monotonic() - self.window
        return [at for at in self._failures.get(name, ()) if at > cutoff]
