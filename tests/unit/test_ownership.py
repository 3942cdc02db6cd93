"""The ownership judgement (docs/ownership.md): what is provably this store's, what is
another's, for marked things and for older unmarked ones; and the store identity itself."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from adapters.eventstore import EventStoreRepository, open_application, parse_store_url
from adapters.images import DirectoryImageStore
from domain.ownership import Issued, foreign_images, foreign_on_host, owns_image
from domain.ports import HypervisorError, ImageInfo
from domain.service import LifecycleService
from domain.store_identity import StoreMark, identify_store, known_mark

OURS, THEIRS = str(uuid.uuid4()), str(uuid.uuid4())
ISSUED = Issued(ids=frozenset({"i-ours"}), macs=frozenset({"52:54:00:00:00:01"}),
                image_ids=frozenset({"img-ours"}))


def image(image_id: str, store_id: str | None, instance_id: str | None = None) -> ImageInfo:
    return ImageInfo(id=image_id, name="x", format="qcow2", size=1, virtual_size=1,
                     created_at="2026-01-01T00:00:00+00:00", instance_id=instance_id,
                     store_id=store_id)


@pytest.mark.parametrize(("info", "ours"), [
    (image("a", OURS), True),                      # marked with our id
    (image("a", THEIRS, "i-ours"), False),         # another store's mark wins over any id
    (image("img-ours", THEIRS), False),
    (image("img-ours", None), True),               # unmarked: an image id we issued
    (image("b", None, "i-ours"), True),            # unmarked: a snapshot of our instance
    (image("b", None, "i-theirs"), False),         # unmarked: someone else's snapshot
    (image("b", None, None), False),               # unmarked import: nobody's to judge
])
def test_owns_image(info: ImageInfo, ours: bool) -> None:
    assert owns_image(info, OURS, ISSUED) is ours


def test_without_an_identity_only_unmarked_images_can_be_ours() -> None:
    assert not owns_image(image("a", OURS), None, ISSUED)
    assert owns_image(image("img-ours", None), None, ISSUED)


def test_foreign_on_a_host_is_whatever_carries_no_id_we_issued() -> None:
    found = foreign_on_host(
        "h1", domains={"i-ours", "i-theirs"}, disks={"i-ours", "d-theirs"},
        dhcp={"52:54:00:00:00:01": "10.213.0.1", "52:54:00:00:00:09": "10.213.0.9"},
        tagged_elsewhere={"52:54:00:00:00:07": "10.213.0.7"}, ours=ISSUED)
    assert [(d.kind, d.subject, d.fixable) for d in found] == [
        ("foreign-domain", "i-theirs", False), ("foreign-disk", "d-theirs", False),
        ("foreign-dhcp-entry", "52:54:00:00:00:07", False),
        ("foreign-dhcp-entry", "52:54:00:00:00:09", False)]


def test_foreign_images_leave_out_unmarked_imports() -> None:
    found = foreign_images(
        [image("m", THEIRS), image("s", None, "i-theirs"), image("imp", None)],
        partial_images=["img-ours", "p-theirs"], ours=ISSUED)
    assert [(d.kind, d.subject) for d in found] == [
        ("foreign-image", "m"), ("foreign-image", "s"), ("foreign-partial-image", "p-theirs")]
    assert not any(d.fixable for d in found)


def test_a_tag_says_ours_theirs_or_nothing() -> None:
    mark = StoreMark("0123abcd-0000-4000-8000-000000000000")
    assert mark.tag == "0123abcd" and mark.tagged("vm1") == "vm1-sh0123abcd"
    assert mark.owns_tagged("vm1-sh0123abcd") is True
    assert mark.owns_tagged("vm1-shffffffff") is False
    assert mark.owns_tagged("web-deadbeef") is None  # a name chosen by hand
    assert mark.owns_tagged("vm1") is None and mark.owns_tagged(None) is None
    assert 0 <= mark.address_start < 256


def test_the_identity_is_made_once_and_keeps_the_hosts_named_before_it(
    tmp_path: Path,
) -> None:
    store = parse_store_url(f"sqlite:///{tmp_path / 'shelf.db'}")
    app = open_application(store)
    try:
        repo = EventStoreRepository(app, store)
        LifecycleService(repo).add_host("old", "test:///default", 1, 1, 1, "u", "r")
        assert known_mark(repo) is None  # reading makes nothing
        first = identify_store(repo)
        assert first == identify_store(repo) == known_mark(repo)
        assert first.legacy_hosts == frozenset({"old"})
    finally:
        app.close()


def test_an_image_store_finds_by_name_its_own_then_unmarked_never_anothers(
    tmp_path: Path,
) -> None:
    source = tmp_path / "src.raw"
    source.write_bytes(b"data")
    root = tmp_path / "images"
    older = DirectoryImageStore(root).import_file("base", source)
    theirs = DirectoryImageStore(root, THEIRS).import_file("base", source)
    ours = DirectoryImageStore(root, OURS)
    assert ours.find("base") == older  # theirs is newer, but not ours
    mine = ours.import_file("base", source)
    assert ours.find("base") == mine
    assert ours.find(theirs.id) == theirs  # an explicit id is explicit
    with pytest.raises(HypervisorError, match="belongs to store"):
        ours.delete(theirs.id)
    assert DirectoryImageStore(root, THEIRS).get(theirs.id) is not None
    assert {i.id for i in ours.usable()} == {older.id, mine.id}
