"""Bad input, as a careless operator types it: every refusal is one line on stderr and a
documented exit code, records nothing, and leaves every read command working.

The table runs through the real entrypoint (`cli.main.main`) in this process, on both
stores; the edges a process has (Ctrl-C, a closed pipe) run `shelf` as a subprocess.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from application.store import EVENTS_TABLE
from tests.conftest import Harness, Result, pg_admin_conninfo

REPO = Path(__file__).resolve().parents[2]
SIZES = ("--vcpus", "1", "--memory-mb", "64", "--disk-gb", "1")
BOOT = ("boot", "vm2", "--host", "h1", *SIZES)
HOST = ("host", "add", "h2", "--uri", "test:///default", *SIZES)
UUID = "6d0b7b0e-0a52-4a8e-9f0e-3f5d1c6a1b2c"
USAGE, NOT_FOUND, CONFLICT = 2, 3, 4

# (argv, exit code). {node}: a test-driver node file; {dir}: a directory; {file}: an image.
CASES: list[tuple[tuple[str, ...], int]] = [
    # names that would become paths, or break a line, or can't be told from an id
    (("host", "add", "", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "../../etc", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "a/b", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "..", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "a..b", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", ".hidden", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "h\x01", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "h\n1", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "h" * 64, "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "h 1", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "hé", "--uri", "test:///default", *SIZES), USAGE),
    (("host", "add", "h1", "--uri", "test:///default", *SIZES), CONFLICT),
    (("boot", "", "--host", "h1", *SIZES), USAGE),
    (("boot", "a/b", "--host", "h1", *SIZES), USAGE),
    (("boot", "..", "--host", "h1", *SIZES), USAGE),
    (("boot", "vm\tx", "--host", "h1", *SIZES), USAGE),
    (("boot", "v" * 300, "--host", "h1", *SIZES), USAGE),
    (("boot", UUID, "--host", "h1", *SIZES), USAGE),
    (("boot", "-vm", "--host", "h1", *SIZES), USAGE),
    (("boot", "vm1", "--host", "h1", *SIZES), CONFLICT),
    # a flavor held to Nova's schema, as the API holds it: an id is one URL path segment
    (("flavor", "create", "f1", "--id", "a/b", "--vcpus", "1", "--memory-mb", "64",
      "--disk-gb", "1"), USAGE),
    (("flavor", "create", "f1", "--id", " x", "--vcpus", "1", "--memory-mb", "64",
      "--disk-gb", "1"), USAGE),
    (("flavor", "create", " f1", "--vcpus", "1", "--memory-mb", "64", "--disk-gb", "1"),
     USAGE),
    (("flavor", "create", "f\x01", "--vcpus", "1", "--memory-mb", "64", "--disk-gb", "1"),
     USAGE),
    (("image", "import", "", "{file}"), USAGE),
    (("image", "import", "../x", "{file}"), USAGE),
    (("image", "import", "a/b", "{file}"), USAGE),
    (("image", "import", "i" * 64, "{file}"), USAGE),
    (("image", "import", "base", "{dir}/no-such-file"), NOT_FOUND),
    # sizes no store column could hold, or none at all
    (("boot", "vm2", "--host", "h1", "--vcpus", "99999999999999999999999",
      "--memory-mb", "64", "--disk-gb", "1"), USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "0", "--memory-mb", "64", "--disk-gb", "1"),
     USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "-1", "--memory-mb", "64", "--disk-gb", "1"),
     USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "1", "--memory-mb", "2147483648",
      "--disk-gb", "1"), USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "1", "--memory-mb", "64",
      "--disk-gb", "2147483648"), USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "1", "--memory-mb", "64", "--disk-gb", "0"),
     USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "1.5", "--memory-mb", "64",
      "--disk-gb", "1"), USAGE),
    (("boot", "vm2", "--host", "h1", "--vcpus", "abc", "--memory-mb", "64",
      "--disk-gb", "1"), USAGE),
    (("host", "add", "h2", "--uri", "test:///default", "--vcpus", "2147483648",
      "--memory-mb", "64", "--disk-gb", "1"), USAGE),
    (("host", "add", "h2", "--uri", "test:///default", "--vcpus", "1",
      "--memory-mb", "0", "--disk-gb", "1"), USAGE),
    (("host", "add", "h2", "--uri", "test:///default", "--vcpus", "1",
      "--memory-mb", "-5", "--disk-gb", "1"), USAGE),
    (("host", "add", "h2", "--uri", "test:///default", "--vcpus", "1",
      "--memory-mb", "64", "--disk-gb", "99999999999999999999"), USAGE),
    # references: empty, or naming nothing
    (("show", ""), USAGE),
    (("show", "nosuch"), NOT_FOUND),
    (("shelve", ""), USAGE),
    (("delete", "nosuch"), NOT_FOUND),
    (("history", ""), USAGE),
    (("actions", "v" * 300), USAGE),
    (("boot", "vm2", "--host", "", *SIZES), USAGE),
    (("boot", "vm2", "--host", "../../etc", *SIZES), NOT_FOUND),
    (("boot", "vm2", "--host", "h1", *SIZES, "--image", ""), USAGE),
    (("boot", "vm2", "--host", "h1", *SIZES, "--image", "nosuch"), NOT_FOUND),
    (("unshelve", "vm1", "--host", ""), USAGE),
    (("unshelve", "vm1", "--host", "nosuch"), NOT_FOUND),
    (("shelve", "vm1"), CONFLICT),  # still being built: refused in this state
    (("--user", "a\nb", "list"), USAGE),
    (("--user", "", "shelve", "vm1"), USAGE),
    # waits
    ((*BOOT, "--wait", "--timeout", "-5"), USAGE),
    ((*BOOT, "--wait", "--timeout", "nan"), USAGE),
    ((*BOOT, "--wait", "--timeout", "inf"), USAGE),
    (("shelve", "vm1", "--wait", "--timeout", "-5"), USAGE),
    (("stop", "vm1", "--timeout", "1e9"), USAGE),
    # serve's options, refused before it serves
    (("serve", "--threads", "0"), USAGE),
    (("serve", "--threads", "-1"), USAGE),
    (("serve", "--threads", "100000"), USAGE),
    (("serve", "--shutdown-timeout", "-1"), USAGE),
    (("serve", "--shutdown-timeout", "inf"), USAGE),
    (("serve", "--shutdown-retry-interval", "0"), USAGE),
    (("serve", "--shelved-offload-time", "-5"), USAGE),
    (("serve", "--shelved-offload-time", "nan"), USAGE),
    (("serve", "--shelved-offload-time", "1e20"), USAGE),
    (("serve", "--connect-timeout", "0"), USAGE),
    (("serve", "--connect-timeout", "nan"), USAGE),
    (("serve", "--host", ""), USAGE),
    (("serve", "--host", "nosuch"), NOT_FOUND),
    # audit's pages, times and filters
    (("audit", "--limit", "-1"), USAGE),
    (("audit", "--limit", "99999999999999999999"), USAGE),
    (("audit", "--limit", "1000001"), USAGE),
    (("audit", "--after", "-1"), USAGE),
    (("audit", "--after", "99999999999999999999"), USAGE),
    (("audit", "--since", "yesterday"), USAGE),
    (("audit", "--since", "-99999999999999w"), USAGE),
    (("audit", "--until", "2026-02-30"), USAGE),
    (("audit", "--since", "-1h", "--until", "-2h"), USAGE),
    (("audit", "--result", "Bogus"), USAGE),
    (("audit", "--format", "xml"), USAGE),
    (("audit", "--instance", ""), USAGE),
    (("audit", "--instance", "nosuch"), NOT_FOUND),
    (("audit", "--user", "a\x1bb"), USAGE),
    (("show", "vm1", "--as-of", "10000-01-01"), USAGE),
    (("show", "vm1", "--as-of", "2026-13-01"), USAGE),
    (("host", "list", "--as-of", "garbage"), USAGE),
    # projections
    (("projections", "rebuild", "--jobs", "0"), USAGE),
    (("projections", "rebuild", "--jobs", "1000"), USAGE),
    (("projections", "rebuild", "nosuch"), USAGE),
    # hypervisor URIs
    (("host", "add", "h2", "--uri", "", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "not a uri", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "test:///default\n", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "test:///" + "x" * 2000, *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "vbox:///session", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "qemu+tcp://127.0.0.1:99999/system", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "qemu+tcp://127.0.0.1:abc/system", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "test:///nonexistent/node.xml", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "test://{dir}", *SIZES), USAGE),
    (("host", "add", "h2", "--uri", "://nothing", *SIZES), USAGE),
    ((*HOST, "--connect-timeout", "-1"), USAGE),
    (("host", "add", "h2", "--uri", "test:///default", "--connect-timeout", "1e9"), USAGE),
    (("host", "remove", ""), USAGE),
    (("host", "remove", "nosuch"), NOT_FOUND),
    # stores
    (("--store", "mysql://x", "list"), USAGE),
    (("--store", "sqlite:///", "list"), USAGE),
    (("--store", "postgresql://127.0.0.1", "list"), USAGE),
    (("--store", "sqlite:///x\x00y", "list"), USAGE),
    (("--store", "sqlite:///{dir}/typo.db", "list"), NOT_FOUND),
    (("--store", "sqlite:///{dir}/typo.db", "shelve", "vm1"), NOT_FOUND),
    # the command line itself
    (("nosuchcommand",), USAGE),
    (("reconcile", "--fixx"), USAGE),
    (("boot", "vm2", "--host", "h1"), USAGE),
]
READS = (("list",), ("show", "vm1"), ("host", "list"), ("audit",), ("image", "list"),
         ("projections", "status"))


def count_events(store: str) -> int:
    if store.startswith("sqlite:///"):
        with sqlite3.connect(store[len("sqlite:///"):]) as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM {EVENTS_TABLE['sqlite']}").fetchone()
    else:
        with psycopg.connect(store) as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM {EVENTS_TABLE['postgres']}").fetchone()
    assert row is not None
    return int(row[0])


def one_line(result: Result) -> bool:
    return result.err.count("\n") == 1 and result.err.endswith("\n") and (
        "Traceback" not in result.err)


@pytest.fixture
def fleet(harness_factory: Any, tmp_path: Path) -> Harness:
    """A host and an instance (recorded, not driven: no worker is needed to refuse)."""
    h: Harness = harness_factory(start=False)
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", *SIZES)
    (tmp_path / "base.img").write_bytes(b"\0" * 4096)
    return h


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 60


def test_bad_input_is_refused_in_one_line_and_records_nothing(
        fleet: Harness, tmp_path: Path) -> None:
    places = {"node": str(tmp_path / "h1.xml"), "dir": str(tmp_path),
              "file": str(tmp_path / "base.img")}
    failures: list[str] = []
    for argv, code in CASES:
        argv = tuple(arg.format(**places) for arg in argv)
        before = count_events(fleet.store)
        result = fleet.shelf(*argv)
        recorded = count_events(fleet.store) - before
        if result.code != code or not one_line(result) or recorded:
            failures.append(f"{argv!r}: exit {result.code} (want {code}), "
                            f"{recorded} events recorded, stderr {result.err!r}")
        failures.extend(failed_reads(fleet, READS[:1], argv))
    failures.extend(failed_reads(fleet, READS, "the whole table"))
    assert not (tmp_path / "typo.db").exists()  # no read made a store
    assert not failures, "\n".join(failures)


def failed_reads(fleet: Harness, reads: tuple[tuple[str, ...], ...], after: Any) -> list[str]:
    """`list` after each case, every read command after the table: the events are the
    same after each case (counted), so what reads them can't have changed in between."""
    results = {read: fleet.shelf(*read) for read in reads}
    return [f"after {after!r}: {' '.join(read)} -> {result.code}: {result.err!r}"
            for read, result in results.items() if result.code != 0]


# ---- no such store ----------------------------------------------------------------------

def test_read_commands_never_make_a_sqlite_store(tmp_path: Path) -> None:
    from cli.main import main

    typo = tmp_path / "sub" / "typo.db"
    for read in (*READS[:4], ("projections", "status"), ("reconcile",), ("stop", "vm1")):
        result = run_in_process(main, "--store", f"sqlite:///{typo}", *read)
        assert result.code == NOT_FOUND, (read, result)
        assert result.err == f"shelf: no such store: sqlite:///{typo} (`shelf host add` " \
                             "makes one)\n"
    assert not typo.parent.exists()
    (tmp_path / "empty.db").touch()  # a file, but no store in it
    empty = run_in_process(main, "--store", f"sqlite:///{tmp_path / 'empty.db'}", "list")
    assert empty.code == NOT_FOUND and one_line(empty)
    node = tmp_path / "node.xml"
    node.write_text("<node/>")
    made = run_in_process(main, "--store", f"sqlite:///{typo}", "host", "add", "h1",
                          "--uri", f"test://{node}", *SIZES)
    assert made.code == 0, made.err  # a command that records makes the store
    assert run_in_process(main, "--store", f"sqlite:///{typo}", "list").code == 0


@pytest.mark.postgres
def test_read_commands_never_make_a_postgres_store(pg_url: str) -> None:
    from cli.main import main

    missing = f"{pg_admin_conninfo().rsplit('/', 1)[0]}/shelf_test_nosuch_{uuid.uuid4().hex[:8]}"
    result = run_in_process(main, "--store", missing, "list")
    assert result.code == NOT_FOUND and one_line(result), result
    assert "no such store" in result.err
    for read in READS[:4]:  # an empty database: no store in it, and none made
        result = run_in_process(main, "--store", pg_url, *read)
        assert result.code == NOT_FOUND and one_line(result), (read, result)
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (EVENTS_TABLE["postgres"],)).fetchone()
    assert row == (None,)


def run_in_process(main: Any, *argv: str) -> Result:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return Result(code, out.getvalue(), err.getvalue())


# ---- a process's edges: Ctrl-C and a closed pipe ----------------------------------------

def shelf_process(store: str, tmp_path: Path, *argv: str, **options: Any) -> Any:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SHELF_DATA_DIR": str(tmp_path / "data")}
    return subprocess.Popen([sys.executable, "-m", "cli.main", "--store", store, *argv],
                            env=env, stderr=subprocess.PIPE, text=True, **options)


def test_ctrl_c_during_wait_is_one_line_and_exit_130(fleet: Harness, tmp_path: Path) -> None:
    """No `serve` runs, so the wait would go on for its whole timeout."""
    shelf = shelf_process(fleet.store, tmp_path, "boot", "vm3", "--host", "h1", *SIZES,
                          "--wait", stdout=subprocess.PIPE)
    instance_id = shelf.stdout.readline().strip()  # recorded, and now waiting
    shelf.send_signal(signal.SIGINT)
    _, err = shelf.communicate(timeout=60)
    assert shelf.returncode == 130
    assert err == "shelf: interrupted\n"
    assert fleet.show("vm3")["id"] == instance_id  # the request stays recorded


@pytest.mark.parametrize("read", [("list",), ("audit", "--events"), ("history", "vm1")])
def test_a_closed_pipe_ends_quietly(fleet: Harness, tmp_path: Path,
                                    read: tuple[str, ...]) -> None:
    """`shelf list | head -0`: the reader is gone before anything is written."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        shelf = shelf_process(fleet.store, tmp_path, *read, stdout=writer)
    finally:
        os.close(writer)
    _, err = shelf.communicate(timeout=60)
    assert (shelf.returncode, err) == (0, "")
