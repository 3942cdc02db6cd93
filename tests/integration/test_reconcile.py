"""`reconcile [--fix]` finds each kind of difference on a real (test-driver) libvirt host,
fixes only leaks that this store owns, and leaves what is not ours alone."""

from __future__ import annotations

import argparse
import io
import json
import uuid
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from adapters.images import DirectoryImageStore
from application.bootstrap import Context
from cli.commands import reconcile_command
from domain.ports import DomainSpec

WAIT = ("--wait", "--timeout", "60")


def run_reconcile(
    store_url: str, tmp_path: Path, hosts: Any, fix: bool, all_: bool = False
) -> tuple[int, Any]:
    ctx = Context(store_url, tmp_path / "data", hosts=hosts)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            args = argparse.Namespace(fix=fix, json=not fix, all=all_)
            code = reconcile_command(ctx, args)
    finally:
        ctx.app.close()
        ctx.db.close()
    return code, (json.loads(out.getvalue()) if not fix else out.getvalue())


def spec_of(vm: dict[str, Any], **changes: Any) -> DomainSpec:
    fields = {"instance_id": vm["id"], "name": vm["name"], "vcpus": vm["vcpus"],
              "memory_mb": vm["memory_mb"], "disk_gb": vm["disk_gb"], "mac": vm["mac"],
              "ip": vm["ip"]}
    return DomainSpec(**(fields | changes))


def kinds(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(row["kind"], row["subject"]) for row in rows}


def test_reconcile_reports_each_difference_and_fixes_only_our_leaks(
    harness_factory: Any, hosts: Any, store_url: str, tmp_path: Path
) -> None:
    h = harness_factory(hosts=hosts)
    h.add_host("h1")
    for name in ("vm1", "vm2", "vm3"):
        h.ok("boot", name, "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
             "--disk-gb", "1", *WAIT)
    h.ok("shelve", "vm3", *WAIT)
    assert run_reconcile(store_url, tmp_path, hosts, fix=False) == (0, [])

    vm1, vm2, vm3 = h.show("vm1"), h.show("vm2"), h.show("vm3")
    h.ok("delete", "vm2", *WAIT)
    driver = h.driver("h1")
    driver.create_disk(spec_of(vm2), None)          # leaks of a deleted instance of ours
    driver.define_and_start(spec_of(vm2))
    driver.add_dhcp_host(vm2["mac"], vm2["ip"], "vm2")
    driver.delete_disk(vm1["id"])                   # vm1 lost its disk
    images = DirectoryImageStore(tmp_path / "data" / "images")
    image_path = images.path_for(vm3["shelved_image_id"])
    leaked_id = str(uuid.uuid4())
    images.path_for(leaked_id).write_bytes(b"a snapshot nobody recorded")
    leaked = images.commit(leaked_id, "vm2-shelved", vm2["id"])
    assert leaked.id and image_path.exists()
    theirs = tmp_path / "theirs.img"                 # another store's domain on this daemon
    foreign = spec_of(vm2, instance_id=str(uuid.uuid4()), name="theirs",
                      mac="52:54:00:aa:bb:cc", ip="10.213.250.250", volume_path=str(theirs))
    driver.create_volume(theirs, 1, None)
    driver.define_and_start(foreign)
    driver.add_dhcp_host(foreign.mac, foreign.ip, "theirs")

    code, rows = run_reconcile(store_url, tmp_path, hosts, fix=False)
    assert code == 1
    assert kinds(rows) == {
        ("orphan-domain", vm2["id"]), ("orphan-dhcp-entry", vm2["mac"]),
        ("orphan-disk", vm2["id"]), ("missing-disk", vm1["id"]),
        ("leaked-image", leaked.id),
    }

    code, printed = run_reconcile(store_url, tmp_path, hosts, fix=True)
    assert code == 1  # the missing disk cannot be fixed by removing anything
    assert "fixed orphan-domain" in printed and "missing-disk" in printed
    assert run_reconcile(store_url, tmp_path, hosts, fix=False)[1] == [
        {"kind": "missing-disk", "host": "h1", "subject": vm1["id"],
         "detail": "the store expects this disk on h1", "fixable": False}]
    assert vm2["id"] not in driver.domains() and vm2["mac"] not in driver.dhcp_hosts()
    assert foreign.instance_id in driver.domains()  # not ours: untouched
    assert foreign.mac in driver.dhcp_hosts()
    assert [i.id for i in images.list()] == [vm3["shelved_image_id"]]
    code, rows = run_reconcile(store_url, tmp_path, hosts, fix=False, all_=True)
    assert kinds(rows) == {("missing-disk", vm1["id"]), ("foreign-domain", foreign.instance_id),
                           ("foreign-dhcp-entry", foreign.mac)}


def test_reconcile_reports_and_fixes_hidden_leftovers_of_this_store_only(
    harness_factory: Any, hosts: Any, store_url: str, tmp_path: Path
) -> None:
    """What a crash leaves in a disks directory (a partial clone, a partial unlinking copy)
    and a killed `host add` leaves there and in the image store (a storage probe): ours are
    reported and removed by --fix (never the disk itself); others' only listed with --all."""
    h = harness_factory(hosts=hosts)
    h.add_host("h1")
    for name in ("vm1", "vm2"):
        h.ok("boot", name, "--host", "h1", "--vcpus", "1", "--memory-mb", "256",
             "--disk-gb", "1", *WAIT)
    vm1, vm2 = h.show("vm1"), h.show("vm2")
    h.ok("delete", "vm1", *WAIT)  # its id is still one this store issued
    ctx = Context(store_url, tmp_path / "data")
    try:
        tag = ctx.identify().tag
    finally:
        ctx.close()
    driver = h.driver("h1")
    disks, images = driver.disks_dir, tmp_path / "data" / "images"
    images.mkdir(parents=True, exist_ok=True)
    stranger = str(uuid.uuid4())
    ours = [disks / f".{vm1['id']}.qcow2.cloning", disks / f".{vm2['id']}.qcow2.own",
            disks / f".shelf-reflink-probe-{tag}-{uuid.uuid4()}",
            images / f".shelf-reflink-probe-{tag}-{uuid.uuid4()}"]
    theirs = [disks / f".{stranger}.qcow2.cloning",
              images / f".shelf-reflink-probe-0badcafe-{uuid.uuid4()}",
              images / f".shelf-reflink-probe-{uuid.uuid4()}"]  # untagged: unprovable
    for path in ours + theirs:
        path.write_bytes(b"left by a crash")

    code, rows = run_reconcile(store_url, tmp_path, hosts, fix=False)
    assert code == 1
    assert kinds(rows) == {("partial-disk", vm1["id"]), ("partial-disk", vm2["id"]),
                           ("probe-file", ours[2].name), ("probe-file", ours[3].name)}
    _code, rows = run_reconcile(store_url, tmp_path, hosts, fix=False, all_=True)
    assert {("foreign-partial-disk", stranger), ("foreign-probe-file", theirs[1].name),
            ("foreign-probe-file", theirs[2].name)} <= kinds(rows)

    code, _out = run_reconcile(store_url, tmp_path, hosts, fix=True)
    assert [p.name for p in ours if p.exists()] == []
    assert all(p.exists() for p in theirs)
    assert driver.has_disk(vm2["id"])  # only the partial copy went, not vm2's disk
    assert run_reconcile(store_url, tmp_path, hosts, fix=False) == (0, [])
    for path in theirs:
        path.unlink()
