"""Filesystems of a test's (or a bench's) own: a sparse file, formatted, loop-mounted; then
unmounted, its loop device detached and the file removed, even when the test failed.

For a bench, around a command (`{}` in it is the data directory), as root:

    python -m bench.loopfs --layout reflink --size-mb 40960 -- \
        python -m bench.qemu --data-dir {} --disk-mb 8192

Three layouts of a shelf data directory, one per storage strategy (issue 19):
- `reflink`: the whole data directory on XFS made with `-m reflink=1`;
- `link`: the whole data directory on ext4 (hard links, no reflink);
- `copy`: the data directory on one XFS and its `images/` on a second XFS: both support
  reflink, but a clone can't cross filesystems, so only copying works.

Needs root, `losetup`/`mount` (util-linux, mount: in every Debian) and `mkfs.xfs`
(xfsprogs, in scripts/install-system.sh)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import tmp_dir

LAYOUTS = ("reflink", "link", "copy")
MKFS = {"xfs": ["mkfs.xfs", "-q", "-m", "reflink=1"], "ext4": ["mkfs.ext4", "-q", "-F"]}
XFS_MIN_MB = 300  # mkfs.xfs refuses smaller filesystems


def missing_tools() -> list[str]:
    return [tool for tool in ("losetup", "mount", "umount", "mkfs.xfs", "mkfs.ext4")
            if shutil.which(tool) is None]


@contextlib.contextmanager
def loop_filesystem(backing: Path, mountpoint: Path, fstype: str, size_mb: int) -> Iterator[Path]:
    """`fstype` on a sparse file of `size_mb` MB, mounted at `mountpoint` (made if absent)."""
    backing.parent.mkdir(parents=True, exist_ok=True)
    with open(backing, "wb") as file:
        file.truncate(size_mb * 1024 * 1024)  # sparse: costs only what gets written
    try:
        subprocess.run([*MKFS[fstype], str(backing)], check=True, capture_output=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(backing), str(mountpoint)], check=True,
                       capture_output=True)
        try:
            yield mountpoint
        finally:
            unmount(mountpoint)
    finally:
        detach(backing)
        backing.unlink(missing_ok=True)


def unmount(mountpoint: Path, attempts: int = 20) -> None:
    """Unmount, waiting out a moment's EBUSY (a qemu or libvirt just gone); as a last
    resort detach it lazily, so that nothing stays visible under the test's directory."""
    for _ in range(attempts):
        done = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True)
        if done.returncode == 0 or not _is_mounted(mountpoint):
            return
        time.sleep(0.5)
    subprocess.run(["umount", "--lazy", str(mountpoint)], check=True, capture_output=True)


def detach(backing: Path) -> None:
    """Detach whatever loop device still serves `backing` (mount's autoclear normally has)."""
    found = subprocess.run(["losetup", "--noheadings", "--output", "NAME", "--associated",
                            str(backing)], capture_output=True, text=True)
    for device in found.stdout.split():
        subprocess.run(["losetup", "--detach", device], capture_output=True)


def _is_mounted(path: Path) -> bool:
    return subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0


@contextlib.contextmanager
def data_dir_layout(layout: str, root: Path, data_dir: Path, size_mb: int,
                    images_mb: int | None = None) -> Iterator[Path]:
    """`data_dir` laid out for `layout` (see the module's docstring), the loop files in
    `root`; `images_mb` sizes the copy layout's second filesystem (default: `size_mb`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    fstype = "ext4" if layout == "link" else "xfs"
    size = max(size_mb, XFS_MIN_MB)
    with contextlib.ExitStack() as stack:
        stack.enter_context(loop_filesystem(root / f"{layout}-data.fs", data_dir, fstype, size))
        if layout == "copy":
            images = max(images_mb or size_mb, XFS_MIN_MB)
            stack.enter_context(loop_filesystem(root / "copy-images.fs", data_dir / "images",
                                                "xfs", images))
        yield data_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=LAYOUTS, required=True)
    parser.add_argument("--size-mb", type=int, required=True,
                        help="the data directory's filesystem (a sparse file)")
    parser.add_argument("--images-mb", type=int, default=None,
                        help="the copy layout's images/ filesystem (default: --size-mb)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run is required (after --)")
    if missing := missing_tools():
        raise SystemExit(f"loopfs: missing {', '.join(missing)} (scripts/install-system.sh)")
    root = tmp_dir("shelf-loopfs-")
    try:
        with data_dir_layout(args.layout, root, root / "data", args.size_mb,
                             args.images_mb) as data_dir:
            argv_ = [part.replace("{}", str(data_dir)) for part in command]
            return subprocess.run(argv_).returncode
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
