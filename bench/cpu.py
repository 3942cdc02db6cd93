"""CPU time spent by the processes a bench phase runs on, read from /proc (Linux).

The lifecycle bench uses it to say where a cycle's CPU goes (serves, the bench's own
requests, the database server) and how high its ratio could go on this machine's cores
at that cost: on a shared two-core machine, CPU per cycle decides the ceiling, and wall
time alone doesn't show it.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
DATABASE_SERVER = "postgres"  # the command name of every PostgreSQL server process


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process so far, its reaped children's included
    (a database backend that ends is counted in its server's parent process); 0 once the
    process has gone. This process's own is read to the microsecond, so that even a tiny
    run of the bare loop (the smoke test's) measures some; others' in clock ticks."""
    if pid == os.getpid():
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name is in parentheses and may hold spaces: the fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    # utime, stime, cutime and cstime: the 14th to 17th fields
    return sum(int(field) for field in fields[11:15]) / TICKS_PER_SECOND


def pids_named(command: str) -> list[int]:
    """Every process on this machine whose command name is `command`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == command:
                pids.append(int(entry.name))
        except OSError:  # it ended while we looked
            continue
    return pids


class CpuMeter:
    """CPU seconds of named groups of processes, added up over the phases measured. A
    group is listed afresh at each start and stop, so a process that starts during a
    phase (a database backend) counts from its start. One that ends during it is counted
    in its parent, if the parent is in the group and reaps it (PostgreSQL's server
    process does): whole, so a process that had run before the phase counts too much."""

    def __init__(self, groups: Mapping[str, Callable[[], Iterable[int]]]) -> None:
        self.groups = groups
        self.seconds = dict.fromkeys(groups, 0.0)
        self._started: dict[str, dict[int, float]] = {}

    def start(self) -> None:
        self._started = {name: _cpu_by_pid(pids()) for name, pids in self.groups.items()}

    def stop(self) -> None:
        for name, pids in self.groups.items():
            before = self._started[name]
            self.seconds[name] += sum(seconds - before.get(pid, 0.0)
                                      for pid, seconds in _cpu_by_pid(pids()).items())

    def total(self) -> float:
        return sum(self.seconds.values())


def _cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    return {pid: process_cpu_seconds(pid) for pid in pids}
