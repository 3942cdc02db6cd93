"""`copy_aggregate`, what the repository hands out instead of its cached object, is a deep
copy: changing the copy, however deep, leaves the cached aggregate as it was."""

from __future__ import annotations

import copy

from adapters.eventstore import copy_aggregate
from domain.host import Host


def test_copy_aggregate_equals_a_deepcopy_and_shares_nothing_mutable() -> None:
    host = Host(name="h1", uri="test:///default", vcpus=8, memory_mb=8192, disk_gb=100,
                user="alice", request_id="req-1")
    host.claim("i-1", 2, 1024, 10, "alice", "req-2")
    host.collect_events()
    copied = copy_aggregate(host)
    assert type(copied) is Host
    assert vars(copied) == vars(copy.deepcopy(host))
    copied.claim("i-2", 1, 512, 5, "bob", "req-3")
    copied.claims["i-1"]["vcpus"] = 99
    assert host.claims == {"i-1": {"vcpus": 2, "memory_mb": 1024, "disk_gb": 10}}
    assert host.used() == {"vcpus": 2, "memory_mb": 1024, "disk_gb": 10}
    assert host.version == 2 and not host.collect_events()


class Holder:
    """An aggregate's shapes: dicts and lists of plain values, nested, and a tuple (which
    may hold something mutable, so it is deep-copied as deepcopy would)."""

    def __init__(self) -> None:
        self.claims = {"i-1": {"vcpus": 2}, "i-2": {"vcpus": 1}}
        self.steps = ["PowerOff", {"step": "Snapshot", "hosts": ["h1"]}]
        self.pair = ("h1", ["i-1"])
        self.name = "h1"


def test_nested_dicts_lists_and_tuples_are_copied_not_shared() -> None:
    holder = Holder()
    copied = copy_aggregate(holder)
    assert vars(copied) == vars(copy.deepcopy(holder))
    copied.claims["i-1"]["vcpus"] = 9
    copied.steps[1]["hosts"].append("h2")
    copied.pair[1].append("i-2")
    assert holder.claims["i-1"] == {"vcpus": 2}
    assert holder.steps[1] == {"step": "Snapshot", "hosts": ["h1"]}
    assert holder.pair == ("h1", ["i-1"])
