"""`shelf demo`: the whole story in one process, on a temporary SQLite store and three
libvirt test-driver hosts. Every step goes through the real CLI and the real worker."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

from application.bootstrap import Context
from application.worker import Worker
from cli.demo_api import show_api_request
from domain.process_manager import Settings

# (name, cpus, memory KiB) of the demo's hosts: small enough that placement matters.
HOSTS = (("h1", 8, 8 * 1024 * 1024), ("h2", 8, 8 * 1024 * 1024), ("h3", 4, 4 * 1024 * 1024))
INSTANCES = (
    ("web1", "h1", 2, 2048), ("web2", "h1", 2, 2048), ("db1", "h2", 4, 4096),
    ("cache1", "h2", 1, 1024), ("batch1", "h1", 2, 3072),
)


def node_xml(cpus: int, memory_kib: int) -> str:
    return (
        f"<node><cpu><nodes>1</nodes><sockets>1</sockets><cores>{cpus}</cores>"
        f"<threads>1</threads><active>{cpus}</active><mhz>2000</mhz></cpu>"
        f"<memory>{memory_kib}</memory></node>\n"
    )


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def shelf(store: str, *argv: str) -> None:
    from cli.main import main

    code = main(["--store", store, *argv])
    if code != 0:
        raise SystemExit(f"demo step `shelf {' '.join(argv)}` failed with exit code {code}")


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="shelf-demo-") as tmp:
        root = Path(tmp)
        os.environ["SHELF_DATA_DIR"] = str(root / "data")
        store = f"sqlite:///{root / 'shelf.db'}"
        worker_ctx = Context(store, root / "data")
        stop = threading.Event()
        worker = Worker(worker_ctx, Settings(shelved_offload_time=-1, shutdown_timeout=5))
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        try:
            _story(root, store, thread)
        finally:
            stop.set()
            if thread.is_alive():
                thread.join(timeout=30)
            worker_ctx.close()
    return 0


def _story(root: Path, store: str, worker_thread: threading.Thread) -> None:
    say(f"store {store}; three libvirt test-driver hosts; worker running in this process")
    for name, cpus, memory in HOSTS:
        node = root / f"{name}.xml"
        node.write_text(node_xml(cpus, memory))
        shelf(store, "host", "add", name, "--uri", f"test://{node}", "--disk-gb", "100")
    worker_thread.start()
    say("boot five instances (and one volume-backed)")
    for name, host, vcpus, memory in INSTANCES:
        shelf(store, "boot", name, "--host", host, "--vcpus", str(vcpus), "--memory-mb",
              str(memory), "--disk-gb", "10", "--wait")
    shelf(store, "boot", "vol1", "--host", "h2", "--vcpus", "1", "--memory-mb", "512",
          "--disk-gb", "5", "--volume-backed", "--wait")
    shelf(store, "list")
    say("host usage before")
    shelf(store, "host", "list")
    before_shelving = datetime.now(UTC).isoformat()
    say("shelve web1 and db1: powered off, snapshotted, still holding their hosts' room")
    for name in ("web1", "db1"):
        shelf(store, "shelve", name, "--wait")
    shelf(store, "image", "list")
    shelf(store, "host", "list")
    say("shelve-offload both: domain, disk and DHCP entry gone; room released")
    for name in ("web1", "db1"):
        shelf(store, "shelve-offload", name, "--wait")
    say("shelve vol1 (volume-backed): no snapshot, straight to offloaded")
    shelf(store, "shelve", "vol1", "--wait")
    shelf(store, "host", "list")
    say("unshelve web1 onto h3, db1 wherever most memory is free, vol1 back on its volume")
    shelf(store, "unshelve", "web1", "--host", "h3", "--wait")
    shelf(store, "unshelve", "db1", "--wait")
    shelf(store, "unshelve", "vol1", "--wait")
    shelf(store, "list")
    say("host usage after")
    shelf(store, "host", "list")
    say("web1's actions (Nova-style instance actions, from its event history)")
    shelf(store, "actions", "web1")
    say("the audit trail of every unshelve; every host as it was before the shelving")
    shelf(store, "audit", "--action", "unshelve")
    shelf(store, "host", "list", "--as-of", before_shelving)
    say("the Compute API: `shelf api` in its own process, asked as the openstack client asks")
    show_api_request(store)
    sys.stdout.flush()
