"""The libvirt connection bounds: from the environment, and refused when out of range."""

from __future__ import annotations

import pytest

from adapters.libvirt_connection import ConnectionBounds, open_connection
from domain.errors import UsageError


def test_defaults_and_environment() -> None:
    assert ConnectionBounds.from_env({}) == ConnectionBounds(30.0, 5, 5)
    env = {"SHELF_LIBVIRT_CONNECT_TIMEOUT": "2.5", "SHELF_LIBVIRT_KEEPALIVE_INTERVAL": "3",
           "SHELF_LIBVIRT_KEEPALIVE_COUNT": "4"}
    assert ConnectionBounds.from_env(env) == ConnectionBounds(2.5, 3, 4)
    assert ConnectionBounds.from_env(env, connect_timeout=9).connect_timeout == 9


@pytest.mark.parametrize("env", [
    {"SHELF_LIBVIRT_CONNECT_TIMEOUT": "soon"},
    {"SHELF_LIBVIRT_CONNECT_TIMEOUT": "0"},
    {"SHELF_LIBVIRT_CONNECT_TIMEOUT": "nan"},
    {"SHELF_LIBVIRT_CONNECT_TIMEOUT": "1e9"},
    {"SHELF_LIBVIRT_KEEPALIVE_INTERVAL": "0"},
    {"SHELF_LIBVIRT_KEEPALIVE_COUNT": "1.5"},
])
def test_out_of_range_is_a_usage_error(env: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        ConnectionBounds.from_env(env)


def test_an_open_that_raises_outside_libvirt_is_its_error_not_a_silent_host() -> None:
    """A URI libvirt-python can't even encode (a non-UTF-8 byte from the command line) made
    the connect thread die with a traceback, and the caller wait out the whole timeout and
    blame the host; the caller gets the open's own error at once."""
    bounds = ConnectionBounds(connect_timeout=60)
    with pytest.raises(UnicodeEncodeError):
        open_connection("test:///tmp/\udcff.xml", bounds)
