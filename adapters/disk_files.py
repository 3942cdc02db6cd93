"""Disk files on the filesystem: which constant-time copy two directories allow, and the
clone, link and copy operations themselves (no libvirt here).

A host's storage strategy (`detect_strategy`):
- `reflink`: its disks directory and the image store are on one filesystem, and a trial
  `FICLONE` between them succeeded (XFS with `reflink=1`, btrfs): a snapshot and a spawn
  from an image are copy-on-write clones, independent files made in constant time;
- `link`: one filesystem without reflink (ext4), and a trial hard link between them
  succeeded (a bind mount of the same filesystem refuses it): a snapshot is a hard link to the
  powered-off disk, and the disk's own link is broken (`break_link`: the disk is replaced
  by a copy, the image keeps the inode) before its domain runs again; a spawn copies;
- `copy`: anything else (the image store on another mount, e.g. NFS): both copy.

Every file made here is created mode 0600 (`_create_new`), as libvirt makes its volumes.

`FICLONE` is the kernel's clone ioctl (what `cp --reflink=always` calls); Python's `fcntl`
has no constant for it. It is called here because neither library clones a qcow2: libvirt's
`createXMLFrom` with `VIR_STORAGE_VOL_CREATE_REFLINK` from a qcow2 volume fails here with
"unsupported flags (0x2) in function storageBackendCreateQemuImg" (its reflink is for raw
to raw only), and qemu-img has no clone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from adapters.images import fsync_path
from adapters.logs import get_logger

log = get_logger()

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h
REFLINK, LINK, COPY = "reflink", "link", "copy"
PROBE_PREFIX = ".shelf-reflink-probe-"
PRIVATE_MODE = 0o600


class DiskFileError(Exception):
    """A disk file operation failed; the message is one line."""


def detect_strategy(disks_dir: Path, images_dir: Path, tag: str | None = None) -> str:
    """reflink, link or copy for a host whose disks live in `disks_dir` (both exist), by
    trying each once: a clone, else a hard link, of a probe file from the disks directory
    into the image store (a bind mount of the same filesystem refuses both, EXDEV). Only
    an error that means "not supported here" moves on to the next; any other (no space, no
    permission, a read-only filesystem) raises DiskFileError: the directories are not fit
    for disks, and recording a strategy from that would be a guess. `tag` (the store's)
    names the probe files, so that one a killed `host add` left is provably ours."""
    if disks_dir.stat().st_dev != images_dir.stat().st_dev:
        return COPY
    name = f"{PROBE_PREFIX}{tag}-{uuid.uuid4()}" if tag else f"{PROBE_PREFIX}{uuid.uuid4()}"
    source, dest = disks_dir / name, images_dir / name
    where = f"from {disks_dir} to {images_dir}"
    try:
        _checked(lambda: _write_new(source, b"shelf storage probe\n"), "write", where, frozenset())
        if _checked(lambda: _clone_new(source, dest), "clone", where, CLONE_UNSUPPORTED):
            return REFLINK
        if _checked(lambda: os.link(source, dest), "link", where, LINK_UNSUPPORTED):
            return LINK
        return COPY
    finally:
        _remove(dest)
        _remove(source)


# What FICLONE and link(2) answer when the filesystem (or the pair of mounts) can't do it:
# measured here, ext4 and tmpfs: FICLONE EOPNOTSUPP; a bind mount of the same filesystem:
# link EXDEV (clone EXDEV on XFS). EINVAL and ENOTTY are what older kernels and filesystems
# without the ioctl answer; EPERM is link(2)'s "this filesystem has no hard links".
CLONE_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY})
LINK_UNSUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM})


def _checked(
    attempt: Callable[[], object], what: str, where: str, unsupported: frozenset[int]
) -> bool:
    """Whether the attempt worked; False if the filesystem doesn't support it."""
    try:
        attempt()
    except OSError as exc:
        if exc.errno in unsupported:
            log.info(f"{what} not supported", where=where, reason=exc.strerror)
            return False
        raise DiskFileError(f"{what} a probe file {where}: {exc.strerror or exc}") from exc
    return True


def _remove(path: Path) -> None:
    """path gone (a read-only filesystem answers EROFS even for a file that isn't there)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        if path.exists():
            raise


def _create_new(path: Path) -> int:
    """A new file, readable by its owner only (what libvirt gives the volumes it makes):
    never a wider mode, whatever the umask. Fails if path exists."""
    return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, PRIVATE_MODE)


def _write_new(path: Path, data: bytes) -> None:
    fd = _create_new(path)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _clone_new(source: Path, dest: Path) -> None:
    """dest (absent) made a clone of source; raises OSError, leaving nothing at dest."""
    fd = _create_new(dest)
    try:
        with source.open("rb") as src:
            fcntl.ioctl(fd, FICLONE, src.fileno())
        os.fsync(fd)
    except OSError:
        dest.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)


def clone_file(source: Path, dest: Path) -> None:
    """dest becomes a copy-on-write clone of source (made anew: an old dest is replaced),
    mode 0600. Raises DiskFileError when the filesystem can't clone (then nothing is left
    at dest)."""
    dest.unlink(missing_ok=True)
    try:
        _clone_new(source, dest)
    except OSError as exc:
        raise DiskFileError(f"clone {source} to {dest}: {exc.strerror or exc}") from exc


def link_file(source: Path, dest: Path) -> None:
    """dest becomes a second name of source's file (made anew: an old dest is replaced)."""
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError as exc:
        raise DiskFileError(f"link {source} to {dest}: {exc.strerror or exc}") from exc
    fsync_path(dest.parent)


def copy_file(source: Path, dest: Path) -> None:
    """dest becomes a byte-for-byte copy of source, holes kept, mode and owner too."""
    dest.unlink(missing_ok=True)
    os.close(_create_new(dest))  # cp writes into it: never readable by others meanwhile
    done = subprocess.run(
        ["cp", "--sparse=always", "--preserve=mode,ownership", "--", str(source), str(dest)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        dest.unlink(missing_ok=True)
        raise DiskFileError(f"cp: {_last_line(done.stderr, done.returncode)}")
    fsync_path(dest)


def break_link(path: Path) -> bool:
    """If the file at path has other names (a snapshot linked to it), give path a file of
    its own, a copy, so that writing it never changes the others; the other names keep the
    original file untouched. Crash-safe: the copy is written beside it and renamed over it.
    Returns whether it copied."""
    if path.stat().st_nlink <= 1:
        return False
    own = path.with_name(f".{path.name}.own")
    copy_file(path, own)
    os.replace(own, path)
    fsync_path(path.parent)
    log.info("disk unlinked from its snapshot", path=str(path))
    return True


def leftover_of_break(path: Path) -> Path:
    """The partial copy an interrupted `break_link` of path may have left."""
    return path.with_name(f".{path.name}{OWN_SUFFIX}")


def cloning_name(path: Path) -> Path:
    """Where a clone to path is made before it is renamed to path, whole."""
    return path.with_name(f".{path.name}{CLONING_SUFFIX}")


# --- what a crash leaves behind (reported and removed by `reconcile`) --------------------

CLONING_SUFFIX, OWN_SUFFIX = ".cloning", ".own"


def partials_of(path: Path) -> list[Path]:
    """The hidden partial files an interrupted clone to path or unlinking of path leaves."""
    return [cloning_name(path), leftover_of_break(path)]


def partial_stems(directory: Path, suffix: str) -> list[str]:
    """The names (`<stem><suffix>`, e.g. `<id>.qcow2`) that have a hidden partial file in
    directory (none when it doesn't exist)."""
    stems = set()
    for path in _hidden(directory):
        for partial in (CLONING_SUFFIX, OWN_SUFFIX):
            name = path.name[1:].removesuffix(partial)
            if path.name.endswith(partial) and name.endswith(suffix) and name != suffix:
                stems.add(name.removesuffix(suffix))
    return sorted(stems)


def probe_files(directory: Path) -> dict[str, str]:
    """Probe files a killed `host add` left in directory: name -> the store tag it carries
    ("" for one made before probes were tagged)."""
    found = {}
    for path in _hidden(directory):
        if path.name.startswith(PROBE_PREFIX):
            rest = path.name.removeprefix(PROBE_PREFIX)
            tag, _, probe_id = rest.partition("-")
            found[path.name] = tag if _is_uuid(probe_id) else ""
    return found


def remove_probe_file(directory: Path, name: str) -> None:
    """Remove a probe file, and nothing that is not one."""
    if "/" in name or name not in probe_files(directory):
        raise DiskFileError(f"{name} is no probe file in {directory}: not removed")
    _remove(directory / name)
    log.info("probe file removed", path=str(directory / name))


def _hidden(directory: Path) -> list[Path]:
    try:
        return [path for path in directory.iterdir() if path.name.startswith(".")]
    except FileNotFoundError:
        return []


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def standalone_qcow2(path: Path) -> bool:
    """Whether the file is a qcow2 image that needs no other file (no backing file, no
    external data file): only such a file may be cloned or linked as a whole image."""
    done = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DiskFileError(f"qemu-img info: {_last_line(done.stderr, done.returncode)}")
    info = json.loads(done.stdout)
    specific = info.get("format-specific", {}).get("data", {})
    return bool(info.get("format") == "qcow2" and "backing-filename" not in info
                and "data-file" not in specific)


def flatten(source: Path, dest: Path) -> None:
    """dest becomes a flattened qcow2 copy of the disk at source (`qemu-img convert`,
    which skips zeroes: sparse stays sparse), read and written with O_DIRECT where both
    filesystems take it (`DIRECT_IO`), as Nova's `convert_image` writes with `-t none`."""
    dest.unlink(missing_ok=True)  # a partial copy from a crash is never kept
    os.close(_create_new(dest))  # qemu-img keeps an existing file's mode: 0600 from birth
    cache = DIRECT_IO if _takes_direct_io(source) and _takes_direct_io(dest) else ()
    done = subprocess.run(
        ["qemu-img", "convert", *cache, "-f", "qcow2", "-O", "qcow2", str(source), str(dest)],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        dest.unlink(missing_ok=True)
        raise DiskFileError(f"qemu-img convert: {_last_line(done.stderr, done.returncode)}")


# Both ends of the copy bypass the page cache. Measured on the bench's copy layout (the
# disk on one loop-mounted XFS, the image store on another), cold cache, fsync included,
# alternating, while other work loaded the machine: 8 GiB of data, plain 11.2 to 19.1 s
# (six runs), `-t none -T none` 8.0 to 9.7 s (three) with a sixth of the CPU (0.7 to
# 0.9 s of system time against 5 to 8 s); 1 GiB, plain 1.3 to 2.5 s, direct 1.1 to 1.4 s
# (four each). A plain copy caches both files, and under loop devices their backing
# files too: at 8 GiB more than this machine's 23 GB, so (probably) it pays for reclaim.
# Either half alone was slower than plain at 8 GiB (`-t none` 14.9 to 19.7 s, `-T none`
# 16.0 to 18.7 s), and `-W` with both made it no faster (8.5 to 18.0 s). On plain ext4
# with 2 GiB direct and plain were alike (2.4 to 2.6 s against 2.0 to 3.0 s).
DIRECT_IO = ("-t", "none", "-T", "none")


def _takes_direct_io(path: Path) -> bool:
    """Whether path's filesystem opens it with O_DIRECT (some refuse it: EINVAL)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


def _last_line(stderr: str, returncode: int) -> str:
    lines = stderr.strip().splitlines() or [f"exit status {returncode}"]
    return lines[-1]
