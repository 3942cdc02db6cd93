"""The real guest of the end-to-end tests and the qemu bench: built by
scripts/build-guest-image.sh, cached under a directory keyed by the script's hash (so a
changed script builds afresh), and read from outside: its console lines and, offline, the
boot counter on its root filesystem."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build-guest-image.sh"
DEFAULT_CACHE = Path(os.environ.get("SHELF_GUEST_CACHE", "/var/cache/shelf-tests/guest-image"))
ROOT_OFFSET = (2048 + 32 * 2048) * 512  # the ext4 partition's first byte (see the script)
BOOT_LINE = re.compile(r"^shelf-guest: boot (\d+)$", re.MULTILINE)
BOUND_LINE = re.compile(r"^shelf-guest: bound (\S+)$", re.MULTILINE)
SHUTDOWN_LINE = "shelf-guest: shutdown"
MEMORY_MB = 128  # 80 MiB is the floor for this kernel and initramfs


@dataclass(frozen=True)
class GuestImages:
    """The guest that powers off on ACPI, and the same guest ignoring ACPI."""

    listens: Path
    ignores_acpi: Path


def script_hash() -> str:
    return hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]


def guest_images(cache: Path = DEFAULT_CACHE) -> GuestImages:
    """Both images, built once per version of the script; concurrent callers wait."""
    cache.mkdir(parents=True, exist_ok=True)
    folder = cache / script_hash()
    made = GuestImages(folder / "guest.qcow2", folder / "guest-ignores-acpi.qcow2")
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (made.listens.exists() and made.ignores_acpi.exists()):
            _build(cache, folder, made)
    return made


def _build(cache: Path, folder: Path, made: GuestImages) -> None:
    for stale in cache.iterdir():  # images of older versions of the script
        if stale.is_dir() and stale.name not in (folder.name, "debs"):
            shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "SHELF_GUEST_DEBS": str(cache / "debs")}
    for flags, out in (([], made.listens), (["--ignore-acpi"], made.ignores_acpi)):
        subprocess.run([str(SCRIPT), *flags, str(out)], env=env, check=True, timeout=600,
                        capture_output=True)


def console_text(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_console(log: Path, pattern: re.Pattern[str] | str, after: int = 0,
                     timeout: float = 120) -> str:
    """The first complete console line matching `pattern` at or after character `after`;
    its first group if it has one. A line still being written is not looked at: the
    serial console arrives a few characters at a time, and `bound 10.213.31.` would match
    BOUND_LINE before its last digits came (seen once in CI)."""
    compiled = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
    deadline = time.monotonic() + timeout
    while True:
        text = console_text(log)
        found = compiled.search(text[:text.rfind("\n") + 1], after)
        if found:
            return found.group(1) if compiled.groups else found.group(0)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {compiled.pattern!r} in {log}: {console_text(log)[-2000:]}")
        time.sleep(0.1)


def boot_count(disk: Path) -> int:
    """The guest's boot counter, read offline from a (powered-off) qcow2 disk."""
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(disk), str(raw)],
                       check=True, timeout=120)
        result = subprocess.run(
            ["debugfs", "-R", "cat /var/lib/boot-count", f"{raw}?offset={ROOT_OFFSET}"],
            capture_output=True, text=True, check=True, timeout=60,
        )
    return int(result.stdout.strip() or 0)
