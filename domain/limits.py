"""What a stored value may be: the bounds every store and every projection column hold.

The application layer (application/validation.py) checks requests against these before
anything is recorded, with messages for people; the domain checks them again, so no
entrypoint can record a value that a read could not bring back.
"""

from __future__ import annotations

import re

# A PostgreSQL INTEGER (the projections' vcpus, memory_mb and disk_gb columns, and the
# host usage sums, which claims keep within capacity) holds up to 2**31 - 1. Nova's own
# limit for a flavor's sizes is the same.
MAX_SIZE = 2**31 - 1
# Positions in the notification log: a PostgreSQL BIGINT.
MAX_POSITION = 2**63 - 1

# Names of instances, hosts and images: a host's name becomes a directory and a libvirt
# pool name, so nothing that could leave a directory, hide in one, or break a line.
NAME_MAX = 63
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = (f"1 to {NAME_MAX} letters, digits, '.', '_' or '-', starting with a letter "
             "or digit, without '..'")


def is_valid_name(name: str) -> bool:
    return (len(name) <= NAME_MAX and NAME_PATTERN.fullmatch(name) is not None
            and ".." not in name)


def is_valid_size(value: int) -> bool:
    return type(value) is int and 1 <= value <= MAX_SIZE
