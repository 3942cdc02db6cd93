"""bench/cpu.py reads real processes' CPU time from /proc: checked against processes that
burn a known amount of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.cpu import CpuMeter, pids_named, process_cpu_seconds

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def burn_in_this_process(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_this_process_cpu_time_grows_by_what_it_burns() -> None:
    before = process_cpu_seconds(os.getpid())  # read to the microsecond, not from /proc
    burn_in_this_process(0.3)
    assert 0.3 <= process_cpu_seconds(os.getpid()) - before <= 0.5


def test_a_process_that_is_gone_has_used_nothing() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_cpu_seconds(child.pid) == 0.0


def test_processes_are_found_by_command_name() -> None:
    own = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert os.getpid() in pids_named(own)
    assert pids_named("no-such-command-here") == []


def test_a_meter_counts_a_process_started_during_the_phase() -> None:
    children: list[subprocess.Popen[bytes]] = []
    meter = CpuMeter({"children": lambda: [child.pid for child in children]})
    meter.start()
    children.append(subprocess.Popen([sys.executable, "-c", BURN + "import sys\n"
                                      "sys.stdin.read()\n"], stdin=subprocess.PIPE))
    time.sleep(0.05)
    while process_cpu_seconds(children[0].pid) < 0.3:  # still burning
        time.sleep(0.02)
    meter.stop()
    assert children[0].stdin is not None
    children[0].stdin.close()
    children[0].wait()
    assert 0.3 <= meter.seconds["children"] == meter.total() <= 0.8


def test_a_meter_counts_only_what_its_phases_used() -> None:
    meter = CpuMeter({"this process": lambda: [os.getpid()]})
    burn_in_this_process(0.3)  # before: not counted
    for _ in range(2):
        meter.start()
        burn_in_this_process(0.2)
        meter.stop()
        burn_in_this_process(0.2)  # between phases: not counted
    assert 0.38 <= meter.seconds["this process"] <= 0.55


def test_a_child_that_ends_during_a_phase_counts_in_its_parent() -> None:
    meter = CpuMeter({"this process": lambda: [os.getpid()]})
    meter.start()
    subprocess.run([sys.executable, "-c", BURN], check=True)  # reaped here
    meter.stop()
    assert 0.3 <= meter.seconds["this process"] <= 0.8


def test_another_process_counts_the_children_it_reaped_as_proc_says() -> None:
    """As a PostgreSQL server's parent process counts a backend that ended."""
    reaper = ("import subprocess, sys\n"
              f"subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
              "print('reaped', flush=True)\n"
              "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", reaper], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    meter = CpuMeter({"parent": lambda: [parent.pid]})
    meter.start()
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "reaped\n"
        meter.stop()
    finally:
        assert parent.stdin is not None
        parent.stdin.close()
        parent.wait()
    # /proc counts in clock ticks (10 ms); the parent's own start-up is counted too
    assert 0.28 <= meter.seconds["parent"] <= 0.8
