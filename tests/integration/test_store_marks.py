"""A store's mark on what the host driver makes (libvirt's test driver): its own pool, its
id in the domain's metadata, its tag on DHCP entry names; and another store's entries on
the same network are neither taken over nor removed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.libvirt_host import LibvirtHost, open_host
from adapters.libvirt_xml import dir_pool_xml, domain_store_id
from domain.ports import HypervisorError
from domain.store_identity import StoreMark
from tests.integration.test_libvirt_host import MINIMAL_NODE, spec_for

OURS = StoreMark(str(uuid.uuid4()))
THEIRS = StoreMark(str(uuid.uuid4()))


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LibvirtHost]:
    node = tmp_path / "node.xml"
    node.write_text(MINIMAL_NODE)
    driver = open_host("h1", f"test://{node}", tmp_path / "data", mark=OURS)
    yield driver
    driver.close()


def test_the_disks_pool_and_directory_are_the_stores_own(
    host: LibvirtHost, tmp_path: Path
) -> None:
    host.capacity()
    assert host.disks_pool_name == f"shelf-disks-h1-{OURS.tag}"
    assert (tmp_path / "data" / "hosts" / "h1" / f"disks-{OURS.tag}").is_dir()
    old_hosts = StoreMark(OURS.store_id, frozenset({"old"}))
    legacy = open_host("old", host.uri, tmp_path / "data", mark=old_hosts)
    try:  # a host added before the store had an id keeps its pool (its disks are there)
        assert legacy.disks_pool_name == "shelf-disks-old"
        assert legacy.disks_dir == tmp_path / "data" / "hosts" / "old" / "disks"
    finally:
        legacy.close()


def test_a_pool_of_ours_serving_another_directory_is_refused(
    host: LibvirtHost, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    host._conn.storagePoolDefineXML(dir_pool_xml(host.disks_pool_name, elsewhere), 0)
    with pytest.raises(HypervisorError, match="another store or SHELF_DATA_DIR uses it"):
        host.capacity()


def test_the_domain_metadata_names_the_store(host: LibvirtHost) -> None:
    spec = spec_for()
    host.create_disk(spec, None)
    host.define_and_start(spec)
    assert domain_store_id(host.domain_xml(spec.instance_id)) == OURS.store_id


def test_dhcp_entries_carry_the_tag_and_another_stores_are_left_alone(
    host: LibvirtHost,
) -> None:
    host.add_dhcp_host("52:54:00:00:00:01", "10.213.0.5", "vm1")
    host.add_dhcp_host("52:54:00:00:00:02", "10.213.0.6", "vm1")  # the name is taken
    names = {e.mac: e.name for e in host._dhcp_entries()}
    assert names == {"52:54:00:00:00:01": f"vm1-sh{OURS.tag}",
                     "52:54:00:00:00:02": f"shelf-525400000002-sh{OURS.tag}"}
    host.mark = THEIRS  # now the driver is the other store's, on the same network
    assert host.dhcp_hosts() == {}
    assert set(host.foreign_dhcp_hosts()) == set(names)
    with pytest.raises(HypervisorError, match="reserved by another shelf store"):
        host.add_dhcp_host("52:54:00:00:00:01", "10.213.0.5", "vm9")
    host.remove_dhcp_host("52:54:00:00:00:01")
    host.mark = OURS
    assert set(host.dhcp_hosts()) == set(names)  # nothing of ours was changed
