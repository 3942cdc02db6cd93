"""Two stores side by side on one real libvirtd (qemu:///system): the same SHELF_DATA_DIR
and a host of the same name in both, ACTIVE, SHELVED and SHELVED_OFFLOADED instances on
each side. Nothing one store does (`reconcile --fix`, `delete`, `image import`, shelve and
unshelve, a crash and its resume) touches the other's: its `reconcile` stays clean and its
instances unshelve. SQLite beside SQLite, and SQLite beside PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cleanup import remove_test_artifacts
from tests.e2e.test_qemu import SHELF, Cloud, _clean_up, _require_libvirtd, qemu_io

pytestmark = pytest.mark.e2e

WAIT = ("--wait", "--timeout", "180")
SIZES = ("--vcpus", "1", "--memory-mb", "64", "--disk-gb", "1")


class Side(Cloud):
    """One of the two stores: its own serve (offload only when asked), same host name."""

    def __init__(self, store: str, root: Path, host: str, label: str) -> None:
        super().__init__(store, root)
        self.host, self.label = host, label

    def serve(self, failpoints: str = "") -> subprocess.Popen[bytes]:
        env = {**self.env, "SHELF_FAILPOINTS": failpoints}
        with open(self.root / f"serve-{self.label}.log", "ab") as log:
            self.serve_proc = subprocess.Popen(
                [SHELF, "serve", "--shutdown-timeout", "0",
                 "--shelved-offload-time", "-1"],
                env=env, stdout=subprocess.DEVNULL, stderr=log)
        return self.serve_proc

    def boot(self, name: str, *extra: str) -> str:
        return self.shelf("boot", name, "--host", self.host, *SIZES, *extra,
                          *WAIT).stdout.strip()

    def reconcile(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.shelf("reconcile", *extra, check=False)

    def assert_clean(self) -> None:
        result = self.reconcile()
        assert result.returncode == 0, f"store {self.label}: {result.stdout}{result.stderr}"

    def states(self) -> dict[str, str]:
        rows = json.loads(self.shelf("list", "--json").stdout)
        return {row["name"]: self.show(row["name"])["vm_state"] for row in rows}


@pytest.fixture(params=["sqlite", "postgres"])
def two(request: pytest.FixtureRequest) -> Iterator[tuple[Side, Side]]:
    _require_libvirtd()
    root = Path(f"/var/tmp/shelf-e2e-{uuid.uuid4().hex[:8]}")
    root.mkdir(parents=True)
    other = (f"sqlite:///{root / 'b.db'}" if request.param == "sqlite"
             else request.getfixturevalue("pg_url"))
    host = f"e2e-{uuid.uuid4().hex[:8]}"
    a, b = Side(f"sqlite:///{root / 'a.db'}", root, host, "a"), Side(other, root, host, "b")
    try:
        for side in (a, b):
            side.shelf("host", "add", host, "--uri", "qemu:///system", "--vcpus", "8",
                       "--memory-mb", "2048", "--disk-gb", "20")
            base = root / f"base-{side.label}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"],
                           check=True)
            qemu_io(base, "write -P 0xab 0 64k")
            side.shelf("image", "import", "base", str(base))
            side.serve()
        yield a, b
    finally:
        b.stop_serving()
        b_listing = b.shelf("list", "--json", check=False).stdout
        _clean_up(a)  # both stores' domains, pools and directory are under root
        with contextlib.suppress(ValueError):
            remove_test_artifacts(root, [row["mac"] for row in json.loads(b_listing or "[]")])


def populate(side: Side) -> dict[str, str]:
    """ACTIVE, SHELVED and SHELVED_OFFLOADED instances of this store."""
    ids = {name: side.boot(name, "--image", "base") for name in ("act", "shv", "off")}
    side.shelf("shelve", "shv", *WAIT)
    side.shelf("shelve", "off", *WAIT)
    side.shelf("shelve-offload", "off", *WAIT)
    assert side.states() == {"act": "active", "shv": "shelved", "off": "shelved_offloaded"}
    return ids


def test_one_store_never_touches_the_others(two: tuple[Side, Side]) -> None:
    a, b = two
    populate(a)
    populate(b)
    a_base = a.show("act")["image_id"]
    a.assert_clean()
    b.assert_clean()

    # b's whole repertoire, checking a after each step.
    assert b.reconcile("--fix").returncode == 0
    a.assert_clean()
    foreign = json.loads(b.reconcile("--all", "--json").stdout)
    assert {row["kind"] for row in foreign} >= {"foreign-domain", "foreign-image"}
    assert b.reconcile("--all").returncode == 0  # what is not ours is no difference
    b.shelf("image", "import", "base", str(a.root / "base-b.qcow2"))
    a_vm = a.boot("again", "--image", "base")
    assert a.show(a_vm)["image_id"] == a_base  # a's own base, not b's newer one
    b.shelf("unshelve", "off", *WAIT)
    b.shelf("unshelve", "shv", *WAIT)
    b.shelf("shelve", "act", *WAIT)
    b.shelf("delete", "shv", *WAIT)
    a.assert_clean()

    b.stop_serving()  # a crash half-way through b's shelve, then the resume
    killed = b.serve("after:Snapshot=crash")
    b.shelf("shelve", "off")
    assert killed.wait(timeout=180) == 137
    a.assert_clean()
    b.serve()
    _wait_idle(b, "off")
    assert b.show("off")["vm_state"] == "shelved"
    b.assert_clean()
    a.assert_clean()

    # a's instances come back, and a's reconcile --fix leaves b alone in turn.
    a.shelf("unshelve", "off", *WAIT)
    a.shelf("unshelve", "shv", *WAIT)
    assert a.states() == {"act": "active", "shv": "active", "off": "active",
                          "again": "active"}
    assert a.reconcile("--fix").returncode == 0
    b.assert_clean()
    b.shelf("unshelve", "off", *WAIT)
    b.shelf("unshelve", "act", *WAIT)
    assert b.states() == {"act": "active", "off": "active"}
    a.assert_clean()
    b.assert_clean()


def _wait_idle(side: Side, name: str) -> None:
    deadline = time.monotonic() + 180
    while side.show(name)["task_state"] is not None:
        assert time.monotonic() < deadline, f"{name} of store {side.label} stayed busy"
        time.sleep(0.3)


def test_a_copy_of_a_store_elsewhere_is_refused_at_host_add() -> None:
    """A copied store file has the original's id: on another data directory its host's
    pool would serve the original's disks. `host add` refuses, in one line."""
    _require_libvirtd()
    root = Path(f"/var/tmp/shelf-e2e-{uuid.uuid4().hex[:8]}")
    (root / "copy").mkdir(parents=True)
    host = f"e2e-{uuid.uuid4().hex[:8]}"
    original = Side(f"sqlite:///{root / 'a.db'}", root, host, "a")
    copy = Side(f"sqlite:///{root / 'copy' / 'a.db'}", root / "copy", host, "copy")
    add = ("host", "add", host, "--uri", "qemu:///system", "--vcpus", "1",
           "--memory-mb", "64", "--disk-gb", "1")
    try:
        (root / "tiny.raw").write_bytes(b"tiny")
        original.shelf("image", "import", "tiny", str(root / "tiny.raw"))  # it has an id now
        shutil.copy(root / "a.db", root / "copy" / "a.db")
        original.shelf(*add)
        refused = copy.shelf(*add, check=False)
        assert refused.returncode == 1
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "another store or SHELF_DATA_DIR uses it" in refused.stderr
        assert copy.shelf("host", "list", "--json").stdout.strip() == "[]"
    finally:
        _clean_up(original)
