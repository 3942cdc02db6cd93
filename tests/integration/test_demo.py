"""`make demo` is one of the README's two commands: it runs through, API part included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_through(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cli.main", "demo"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HTTP 200" in done.stdout  # the Compute API answered the openstack-style request
    assert "web1-shelved" in done.stdout  # the shelve made its image
