"""`acting_host`: which host's hypervisor each step calls, as the step itself picks it
(domain/process_manager.py). `serve --host` performs a step only where this is one of
its hosts, or None."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from domain import plans
from domain.process_manager import acting_host

# host: where the domain is; claim_host: where resources are claimed; network_host:
# where its DHCP entry is. All three differ here, so each step's choice shows.
PLACED: Any = SimpleNamespace(host="dom", claim_host="claim", network_host="net")
UNPLACED: Any = SimpleNamespace(host=None, claim_host="claim", network_host=None)

EXPECTED = {
    plans.POWER_OFF: "dom", plans.POWER_ON: "dom", plans.PAUSE: "dom",
    plans.UNPAUSE: "dom", plans.SUSPEND: "dom", plans.RESUME: "dom",
    plans.SNAPSHOT: "dom", plans.CLEAN_NETWORK: "net", plans.DESTROY: "dom",
    plans.SETUP_NETWORK: "claim", plans.SPAWN: "claim",
    # Records only, or the shared image and volume stores: any serve may.
    plans.RELEASE_CLAIM: None, plans.CLAIM: None, plans.DELETE_IMAGE: None,
    plans.DELETE_VOLUME: None, plans.FINISH: None,
}


def test_every_step_has_an_acting_host_rule() -> None:
    assert set(EXPECTED) == {*plans.HYPERVISOR_STEPS, plans.FINISH}


def test_each_step_acts_where_its_method_does() -> None:
    assert {step: acting_host(PLACED, step) for step in EXPECTED} == EXPECTED


def test_without_a_domain_the_clean_up_steps_act_on_the_claimed_host() -> None:
    assert acting_host(UNPLACED, plans.CLEAN_NETWORK) == "claim"
    assert acting_host(UNPLACED, plans.DESTROY) == "claim"
    assert acting_host(UNPLACED, plans.POWER_OFF) is None  # nothing to power off: records
