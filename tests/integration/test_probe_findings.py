"""What a careless operator's probe of issue 14 found: each case ends in one line and a
documented exit code, within a bound, and records nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Harness
from tests.integration.test_unreachable_host import _Listener


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
