"""Password and credential-secret hashing with Argon2id (argon2-cffi).

The cost is OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane): a verification takes
about 20 ms on this project's 2-core machine, so a login stays well under 100 ms even with
the machine busy. A hash records its own parameters, so raising the cost later still
verifies old hashes, and `needs_rehash` tells when one should be replaced.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the user does not exist, so an unknown name costs as much time
# as a wrong password and the two can't be told apart by timing.
_DUMMY_HASH = HASHER.hash("shelf: no such user")


def hash_secret(secret: str) -> str:
    return HASHER.hash(secret)


def verify_secret(secret_hash: str | None, secret: str) -> bool:
    """Whether `secret` matches; a missing hash costs a verification too, and fails."""
    try:
        return HASHER.verify(secret_hash or _DUMMY_HASH, secret) and secret_hash is not None
    except (VerificationError, InvalidHashError):
        return False
