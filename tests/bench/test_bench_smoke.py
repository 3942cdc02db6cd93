"""Each bench runs at a tiny size, so none of them rots. No timing is asserted: only that
each prints its figures and its ratio last, as docs/benchmarks.md says."""

from __future__ import annotations

import re
import shutil

import pytest

from bench import api, audit, fleet, lifecycle, qemu, replay
from bench.common import tmp_dir
from bench.loopfs import data_dir_layout, missing_tools
from tests.e2e.test_qemu import _require_libvirtd

RATIO = re.compile(r"^ratio = \d+\.\d{3}$")


def run(bench_main: object, argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert bench_main(argv) == 0  # type: ignore[operator]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# bench/") and RATIO.match(lines[-1]), lines
    return lines


@pytest.mark.parametrize(("store", "workers"), [("sqlite", 1), ("postgres", 1), ("sqlite", 2)])
def test_lifecycle_bench(store: str, workers: int, request: pytest.FixtureRequest,
                         capsys: pytest.CaptureFixture[str]) -> None:
    if store == "postgres":
        request.getfixturevalue("pg_url")  # PostgreSQL is up (or the test fails under CI)
    lines = run(lifecycle.main, ["--instances", "4", "--hosts", "2", "--store", store,
                                 "--workers", str(workers)], capsys)
    assert any(line.startswith("shelf events/s") for line in lines)
    saves = next(line for line in lines if line.startswith("saves per transaction"))
    assert float(saves.split()[-1]) >= 1  # read from the serves' own logs
    serves_cpu = next(line for line in lines if line.startswith("  serves"))
    assert float(serves_cpu.split()[-2]) > 0  # ms per cycle, read from /proc
    assert any(line.startswith("ceiling ratio on") for line in lines)
    assert any(line.startswith("  database server") for line in lines) == (store == "postgres")


def test_fleet_bench(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(fleet.main, ["--instances", "4", "--hosts", "2", "--serves", "1,2",
                             "--wakeups", "2", "--idle-seconds", "1"], capsys)
    assert sum(line.startswith("## K=") for line in lines) == 2
    for name in ("  database server", "wake-up first step p99", "wake-up handover p99",
                 "idle CPU per serve", "idle database per serve", "lifecycle | ratio = "):
        assert any(line.startswith(name) for line in lines), name
    serves_cpu = next(line for line in lines if line.startswith("  serves"))
    assert float(serves_cpu.split()[-2]) > 0  # ms per cycle, read from /proc


def test_replay_bench(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(replay.main, ["--events", "300", "--hosts", "2", "--store", "sqlite"], capsys)
    assert any(line.startswith("rebuild events/s") for line in lines)


def test_audit_bench(capsys: pytest.CaptureFixture[str]) -> None:
    lines = run(audit.main, ["--events", "300", "--hosts", "2", "--samples", "5",
                             "--store", "sqlite"], capsys)
    assert any(line.startswith("audit --host p99") for line in lines)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_api_bench(store: str, request: pytest.FixtureRequest,
                   capsys: pytest.CaptureFixture[str]) -> None:
    if store == "postgres":
        request.getfixturevalue("pg_url")  # PostgreSQL is up (or the test fails under CI)
    lines = run(api.main, ["--instances", "40", "--hosts", "2", "--samples", "5",
                           "--seconds", "0.5", "--store", store], capsys)
    for name in ("show p99", "detail?limit=100 p99", "shelve POST p99", "show req/s"):
        assert any(line.startswith(name) for line in lines), name


@pytest.mark.e2e
def test_qemu_bench(capsys: pytest.CaptureFixture[str]) -> None:
    _require_libvirtd()
    run(qemu.main, ["--disk-mb", "16", "--runs", "1"], capsys)


@pytest.mark.e2e
def test_qemu_bench_on_a_data_dir_that_clones(capsys: pytest.CaptureFixture[str]) -> None:
    """`--data-dir` on an XFS (reflink=1) of the test's own: the bench names the strategy
    shelf picked there and prints the storage part apart."""
    _require_libvirtd()
    assert missing_tools() == [], "scripts/install-system.sh installs them"
    root = tmp_dir("shelf-bench-xfs-")
    try:
        with data_dir_layout("reflink", root, root / "data", 512) as data_dir:
            lines = run(qemu.main, ["--disk-mb", "16", "--runs", "1",
                                    "--data-dir", str(data_dir)], capsys)
            left = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                          if p.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert "storage strategy: reflink" in lines
    assert any(line.startswith("storage part, shelf") for line in lines)
    assert not [name for name in left if name.startswith(("hosts/", "images/"))], left
