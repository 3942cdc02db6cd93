"""The host drivers shelf uses: `open_host` picks one for a URI, `LibvirtHosts` keeps one
long-lived connection per host.

The drivers themselves are in `host_driver` (real libvirtd: `LibvirtHost`, built from
`host_connection`, `libvirt_domains`, `libvirt_dhcp` and `libvirt_storage`) and
`test_driver_host` (libvirt's test driver: `TestDriverHost`). Their public names are
importable from here too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from adapters.disk_files import COPY, detect_strategy
from adapters.host_connection import UnknownHost
from adapters.host_driver import LibvirtHost
from adapters.libvirt_connection import ConnectionBounds
from adapters.libvirt_storage import disks_pool_for
from adapters.test_driver_host import TestDriverHost
from domain.ports import HostDriver
from domain.store_identity import StoreMark

__all__ = [
    "LibvirtHost", "LibvirtHosts", "TestDriverHost", "UnknownHost", "choose_storage",
    "disks_pool_for", "open_host",
]


def is_test_driver(uri: str) -> bool:
    """libvirt's test driver: `test:///…`, also served by a daemon (`test+tcp://…`)."""
    return uri.split(":", 1)[0].split("+", 1)[0] == "test"


def open_host(
    name: str, uri: str, data_dir: Path, bounds: ConnectionBounds | None = None,
    virt_type: str = "auto",
    mark: StoreMark | None = None,
    storage: str = COPY,
) -> LibvirtHost:
    """The driver for a host: the test driver's for `test://…` URIs (also served by a
    daemon, `test+tcp://…`), else real libvirt's, with the storage strategy recorded for
    it (see `choose_storage`)."""
    if is_test_driver(uri):
        return TestDriverHost(name, uri, data_dir, bounds, mark=mark)
    return LibvirtHost(name, uri, data_dir, bounds, virt_type, mark, storage)


def is_local(uri: str) -> bool:
    """A libvirtd on this machine (`qemu:///…`, `qemu+unix:///…`): its disks directory is
    the one this process sees under SHELF_DATA_DIR."""
    scheme, _, rest = uri.partition(":")
    driver, _, transport = scheme.partition("+")
    return driver == "qemu" and transport in ("", "unix") and rest.startswith("///")


def choose_storage(
    name: str, uri: str, data_dir: Path, mark: StoreMark | None, images_dir: Path, mode: str,
) -> str:
    """The storage strategy for a host being added: prepares its disks directory (the
    image store's exists) and tries them (`disk_files.detect_strategy`, which raises
    DiskFileError when they are not fit for disks at all). `copy` when `mode` is copy;
    for the test driver, which has no disk files to link or clone; and for a remote
    libvirtd (`qemu+ssh://…`, `qemu+tcp://…`), whose disks live on its machine, where
    nothing this process could try says anything about them."""
    if mode == COPY or is_test_driver(uri) or not is_local(uri):
        return COPY
    disks_dir, _pool = disks_pool_for(name, data_dir, mark)
    disks_dir.mkdir(parents=True, exist_ok=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    return detect_strategy(disks_dir, images_dir, mark.tag if mark else None)


class LibvirtHosts:
    """`domain.ports.HostDrivers`: one long-lived connection per host, opened on first use."""

    def __init__(
        self, lookup_uri: Callable[[str], str], data_dir: Path,
        bounds: ConnectionBounds | None = None,
        lookup_virt_type: Callable[[str], str] | None = None,
        mark: Callable[[], StoreMark | None] = lambda: None,
        lookup_storage: Callable[[str], str] | None = None,
    ) -> None:
        self._lookup_uri = lookup_uri  # raises KeyError for an unknown host
        self._lookup_virt_type = lookup_virt_type or (lambda _host: "auto")
        self._lookup_storage = lookup_storage or (lambda _host: COPY)
        self._data_dir = data_dir
        self._bounds = bounds or ConnectionBounds.from_env()
        self._mark = mark  # read when a host is first used: the store's identity by then
        self._drivers: dict[str, LibvirtHost] = {}
        self._lock = threading.Lock()
        # One per host: a host that takes its connect timeout to answer (or not) delays
        # only the steps on that host, not every other host's first connection.
        self._opening: dict[str, threading.Lock] = {}

    def driver(self, host: str) -> HostDriver:
        with self._lock:
            driver = self._drivers.get(host)
            if driver is not None:
                return driver
            opening = self._opening.setdefault(host, threading.Lock())
        with opening:
            with self._lock:
                driver = self._drivers.get(host)
            if driver is None:
                try:
                    uri = self._lookup_uri(host)
                except KeyError as exc:
                    raise UnknownHost(f"unknown host {host}") from exc
                driver = open_host(host, uri, self._data_dir, self._bounds,
                                   self._lookup_virt_type(host), self._mark(),
                                   self._lookup_storage(host))
                with self._lock:
                    self._drivers[host] = driver
            return driver

    def forget(self, host: str) -> None:
        """Close the host's connection, if one is open: its next use connects to the URI
        the store has then (a removed host, or its name added again elsewhere)."""
        with self._lock:
            driver = self._drivers.pop(host, None)
        if driver is not None:
            driver.close()

    def close(self) -> None:
        with self._lock:
            for driver in self._drivers.values():
                driver.close()
            self._drivers.clear()
