"""schemathesis generates requests for every operation of the served /openapi.json, valid
and invalid ones, a few hundred per operation (bounded): no 5xx, no traceback in any body,
and every error is one of Nova's bodies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import sampled_from
from schemathesis import GenerationMode

from tests.api.conftest import Api, start_api

EXAMPLES = 150  # per operation and generation mode: 300 requests per operation, as an
# admin or a member at random
NOVA_FAULTS = {"badRequest", "error", "forbidden", "itemNotFound", "badMethod",
               "notAcceptable", "conflictingRequest", "badMediaType", "overLimit"}


@pytest.fixture
def fuzzed_api(tmp_path: Path) -> Iterator[Api]:
    api = start_api(f"sqlite:///{tmp_path / 'shelf.db'}", tmp_path)
    with api.client("admin:admin") as admin:
        admin.post("/v2.1/flavors", json={"flavor": {"name": "m1", "vcpus": 1, "ram": 64,
                                                     "disk": 1}})
    yield api
    api.stop()


def check(api: Api, case: Any, token: str) -> None:
    response = case.call(base_url=api.url, headers={"X-Auth-Token": token}, timeout=30)
    where = f"{token} {case.method} {case.formatted_path} {case.query} {case.body!r}"
    assert response.status_code < 500, (where, response.text)
    assert "Traceback" not in response.text, where
    if response.status_code >= 400:
        assert set(response.json()) <= NOVA_FAULTS, (where, response.text)


def test_generated_requests_get_no_server_error(fuzzed_api: Api) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode),
                   token=sampled_from(("admin:admin", "alice:web")))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any, token: str) -> None:
                check(fuzzed_api, case, token)

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (e.g. GET / has no inputs)
                assert mode is GenerationMode.NEGATIVE
