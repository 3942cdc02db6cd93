"""What a careless operator's probe of issue 14 found: each case ends in one line and a
documented exit code, within a bound, and records nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from tests.conftest import Harness
from tests.integration.test_bad_input import SIZES, count_events, one_line, run_in_process
from tests.integration.test_unreachable_host import _Listener

NOT_UTF8 = "\udcff"  # a byte that is not UTF-8 on the command line, as Python hands it on


@pytest.mark.timeout(120)
@pytest.mark.parametrize("argv", [("list",), ("host", "add", "h1", "--uri", "test:///default")])
def test_a_postgresql_server_that_never_answers_fails_the_command(
        argv: tuple[str, ...], tmp_path: Path) -> None:
    """A listener of the test's own on 127.0.0.1 that accepts and says nothing: psycopg's
    connect waited for ever (no connect_timeout)."""
    listener = _Listener()
    try:
        result = Harness(f"postgresql://127.0.0.1:{listener.port}/x", tmp_path).shelf(*argv)
    finally:
        listener.close()
    assert result.code == 1, result
    assert result.err.count("\n") == 1 and "timeout" in result.err, result


@pytest.fixture
def fleet(harness_factory: Any, tmp_path: Path) -> Harness:
    h: Harness = harness_factory(start=False)
    h.add_host("h1")
    h.ok("boot", "vm1", "--host", "h1", *SIZES)
    return h


def _refused(h: Harness, *argv: str) -> None:
    before = count_events(h.store)
    result = h.shelf(*argv)
    assert (result.code, one_line(result)) == (2, True), result
    assert count_events(h.store) == before


def test_text_that_is_not_utf8_is_a_usage_error(fleet: Harness, tmp_path: Path) -> None:
    """It was exit 1 with a UnicodeEncodeError (the store's encoder refused it); as a
    --uri it sent libvirt a name it can't take."""
    node = tmp_path / f"node{NOT_UTF8}.xml"
    node.write_text((tmp_path / "h1.xml").read_text())
    _refused(fleet, "--user", f"a{NOT_UTF8}", "boot", "vm2", "--host", "h1", *SIZES)
    _refused(fleet, "show", NOT_UTF8)
    _refused(fleet, "audit", "--action", NOT_UTF8)
    _refused(fleet, "host", "add", "h2", "--uri", f"test://{node}", *SIZES)


def test_the_environment_is_checked_as_its_options_are(
        fleet: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """SHELF_PROJECT stands for boot's --project: `--project 'a<newline>b'` is refused,
    and so is the same SHELF_PROJECT (SHELF_USER was checked so before the CLI recorded
    the operating-system user instead)."""
    monkeypatch.setenv("SHELF_PROJECT", "a\nb")
    before = count_events(fleet.store)
    result = run_in_process(main, "--store", fleet.store, "boot", "vm2", "--host", "h1",
                            *SIZES)
    assert (result.code, one_line(result)) == (2, True), result
    assert count_events(fleet.store) == before


@pytest.mark.parametrize("lifetime", ["-1", "0", "nan", "1e300"])
def test_rotate_keys_refuses_a_token_lifetime_out_of_range(
        fleet: Harness, tmp_path: Path, lifetime: str) -> None:
    """`--token-lifetime -1` dropped every older signing key at once (exit 0): every live
    token stopped verifying."""
    keys = tmp_path / "keys"
    fleet.ok("user", "rotate-keys", "--token-keys", str(keys))
    fleet.ok("user", "rotate-keys", "--token-keys", str(keys))
    before = sorted(keys.iterdir())
    result = fleet.shelf("user", "rotate-keys", "--token-keys", str(keys),
                         "--token-lifetime", lifetime)
    assert (result.code, one_line(result)) == (2, True), result
    assert sorted(keys.iterdir()) == before
