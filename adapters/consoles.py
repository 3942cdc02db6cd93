"""Where an instance's serial console is logged on its host, and reading it back.

The log lives with the instance's local disk, under `<data_dir>/hosts/<host>/console/`: it
outlives power-offs and is removed when the domain is undefined (offload, delete), as
Nova's `console.log` is. Only a host whose data directory is this machine's can be read.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path


def console_log_path(data_dir: Path, host: str, instance_id: str) -> Path:
    return data_dir / "hosts" / host / "console" / f"{instance_id}.log"


def last_lines(path: Path, count: int | None) -> list[str]:
    """The file's last `count` lines (all when None), undecodable bytes replaced: a guest
    may print anything."""
    with path.open(encoding="utf-8", errors="replace", newline="") as file:
        lines = (line.rstrip("\r\n") for line in file)
        return list(lines) if count is None else list(deque(lines, maxlen=count))
