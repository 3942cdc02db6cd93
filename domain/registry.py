"""Aggregates that keep names and addresses unique across instances.

Each is saved in the same transaction as the instance it serves, so two boots racing for a
name or an address can't both succeed (optimistic concurrency on the aggregate's version).
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import Conflict, NoRoom

NAME_NAMESPACE = uuid.UUID("5d7d3f0a-2c4e-4c8b-8f5e-0e9d8c7b6a51")

# The shelf network every host defines (see adapters/libvirt_dhcp.py).
NETWORK = ipaddress.ip_network("10.213.0.0/16")
GATEWAY = ipaddress.ip_address("10.213.0.1")


def name_index_id(name: str) -> uuid.UUID:
    return uuid.uuid5(NAME_NAMESPACE, name)


class NameIndex(Aggregate):
    """Which live instance holds a name."""

    @staticmethod
    def create_id(name: str, **_: Any) -> uuid.UUID:
        return name_index_id(name)

    @event("NameTaken")
    def __init__(self, name: str, instance_id: str) -> None:
        self.name = name
        self.instance_id: str | None = instance_id

    def take(self, instance_id: str) -> None:
        if self.instance_id is not None:
            raise Conflict(f"an instance named {self.name!r} exists: {self.instance_id}")
        self._taken(instance_id=instance_id)

    @event("NameRetaken")
    def _taken(self, instance_id: str) -> None:
        self.instance_id = instance_id

    def free(self, instance_id: str) -> None:
        if self.instance_id == instance_id:
            self._freed(instance_id=instance_id)

    @event("NameFreed")
    def _freed(self, instance_id: str) -> None:
        self.instance_id = None


def mac_for(ip: str) -> str:
    """A MAC as unique as the address: 52:54:00 (QEMU's prefix) + the address's last 3 bytes."""
    packed = ipaddress.ip_address(ip).packed
    return "52:54:00:" + ":".join(f"{byte:02x}" for byte in packed[1:])


BLOCKS = 256  # the /16 in /24 blocks: one small aggregate each, so none grows with the fleet
BLOCK_NAMESPACE = uuid.UUID("c3b0f1e2-7d4a-4b6c-9e8f-1a2b3c4d5e6f")
_RESERVED = frozenset({NETWORK.network_address, GATEWAY, NETWORK.broadcast_address})


def address_block_id(block: int) -> uuid.UUID:
    return uuid.uuid5(BLOCK_NAMESPACE, f"block-{block}")


def block_of(ip: str) -> int:
    return ipaddress.ip_address(ip).packed[2]


def first_block_for(instance_id: uuid.UUID) -> int:
    """Where an instance starts looking: spread out, so concurrent boots rarely collide."""
    return instance_id.int % BLOCKS


class AddressBlock(Aggregate):
    """The fixed IPs of one /24 of the shelf network; an instance keeps its address across
    unshelves. Saved with the instance it serves (optimistic concurrency on its version)."""

    @staticmethod
    def create_id(block: int, **_: Any) -> uuid.UUID:
        return address_block_id(block)

    @event("AddressBlockCreated")
    def __init__(self, block: int, first_index: int = 0) -> None:
        self.block = block
        self.allocated: dict[str, str] = {}  # ip -> instance id
        # Where the store starts in each block (from its id): two stores sharing one
        # libvirt network rarely draw the same address (which the network would refuse).
        self.next_index = first_index

    def allocate(self, instance_id: str) -> str | None:
        """A free address of this block for the instance, or None when the block is full."""
        for offset in range(256):
            index = (self.next_index + offset) % 256
            address = NETWORK[self.block * 256 + index]
            ip = str(address)
            if address not in _RESERVED and ip not in self.allocated:
                self._allocated(ip=ip, instance_id=instance_id, index=index)
                return ip
        return None

    @event("AddressAllocated")
    def _allocated(self, ip: str, instance_id: str, index: int) -> None:
        self.allocated[ip] = instance_id
        self.next_index = index + 1

    def release(self, ip: str, instance_id: str) -> None:
        if self.allocated.get(ip) == instance_id:
            self._released(ip=ip, instance_id=instance_id)

    @event("AddressReleased")
    def _released(self, ip: str, instance_id: str) -> None:
        del self.allocated[ip]


def no_free_address() -> NoRoom:
    return NoRoom(f"no free address left in {NETWORK}")
