"""PostgreSQL restarted under a running worker: it logs, retries with backoff, and carries
on when the database is back; nothing is lost or done twice."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from domain.process_manager import Settings
from tests.conftest import IN_CI, Harness


def _restart_postgres() -> None:
    clusters = Path("/etc/postgresql")
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not clusters.is_dir():
        if IN_CI:
            pytest.fail("CI=true needs a local PostgreSQL cluster this test can restart")
        pytest.skip("no local PostgreSQL cluster to restart")
    version = sorted(clusters.iterdir(), key=lambda p: float(p.name))[-1].name
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                   check=True, timeout=120)


def test_worker_survives_a_postgres_restart(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELF_DATA_DIR", str(tmp_path / "data"))
    h = Harness(pg_url, tmp_path, Settings(shutdown_timeout=1))
    h.start_worker()
    try:
        h.add_host("h1")
        h.ok("boot", "vm1", "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
             "--disk-gb", "1", "--wait", "--timeout", "60")
        _restart_postgres()
        h.ok("shelve", "vm1", "--wait", "--timeout", "120")
        assert h.show("vm1")["vm_state"] == "shelved_offloaded"
        history = h.ok("history", "vm1", "--json").json()
        names = [r["event"] for r in history if r["request_id"] == history[-1]["request_id"]]
        assert names.count("Snapshotted") == 1 and names.count("ShelveOffloaded") == 1
    finally:
        h.stop_worker()
