"""Whether a thing outside the store is provably this store's (docs/ownership.md).

Evidence, strongest first: the store's id on the thing (an image's sidecar, a DHCP entry's
name tag); else an id only this store could have issued (instance ids are random UUIDs, a
shelved image's id derives from one, a MAC from an address this store handed out). What is
neither is another store's, or another tool's: `foreign-…`, shown on request, never fixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from domain.instance import Instance
from domain.ports import ImageInfo

FOREIGN = "foreign-"


@dataclass(frozen=True)
class Difference:
    kind: str  # orphan-domain, missing-domain, orphan-disk, foreign-disk, ... (see README)
    host: str | None
    subject: str
    detail: str
    fixable: bool = False


@dataclass(frozen=True)
class Issued:
    """What this store ever handed out, deleted instances included: instance ids, MACs,
    and image ids (booted from, being written, shelved)."""

    ids: frozenset[str]
    macs: frozenset[str]
    image_ids: frozenset[str] = frozenset()


def issued_by(instances: Iterable[Instance]) -> Issued:
    listed = list(instances)
    image_ids = {x for i in listed for x in (i.image_id, i.pending_image_id, i.shelved_image_id)
                 if x}
    return Issued(ids=frozenset(str(i.id) for i in listed),
                  macs=frozenset(i.mac for i in listed), image_ids=frozenset(image_ids))


def owns_image(image: ImageInfo, store_id: str | None, ours: Issued) -> bool:
    """Marked with this store's id; or unmarked (older) and named by an id it issued."""
    if image.store_id is not None:
        return image.store_id == store_id
    return image.id in ours.image_ids or (image.instance_id or "") in ours.ids


def foreign_on_host(
    host: str, domains: set[str], disks: set[str], dhcp: dict[str, str],
    tagged_elsewhere: dict[str, str], ours: Issued,
) -> list[Difference]:
    """The shelf domains, disks and DHCP entries on a host that this store did not make."""
    found = [_foreign("domain", host, x, "a shelf domain") for x in sorted(domains - ours.ids)]
    found += [_foreign("disk", host, x, "a root disk") for x in sorted(disks - ours.ids)]
    macs = (set(dhcp) - ours.macs) | set(tagged_elsewhere)
    found += [_foreign("dhcp-entry", host, mac, "a DHCP entry") for mac in sorted(macs)]
    return found


def foreign_images(
    images: Iterable[ImageInfo], partial_images: Iterable[str], ours: Issued
) -> list[Difference]:
    """Another store's images (marked, or an older snapshot of an instance that is not
    ours) and half-written files with an id this store never issued. Unmarked imports
    (no instance) are shared by every older store and not listed."""
    found = [Difference(f"{FOREIGN}image", None, image.id,
                        f"{image.name}, made by {image.store_id or 'another store'}")
             for image in images if image.store_id is not None or image.instance_id]
    found += [Difference(f"{FOREIGN}partial-image", None, image_id,
                         "a half-written image file of another store")
              for image_id in partial_images if image_id not in ours.image_ids]
    return found


def _foreign(kind: str, host: str | None, subject: str, what: str) -> Difference:
    place = f"on {host}" if host else "in the image store"
    return Difference(f"{FOREIGN}{kind}", host, subject,
                      f"{what} {place} that another store or tool made: left alone")


def leftover_differences(
    where: str | None, partial_disks: Iterable[str], probes: dict[str, str], ours: Issued,
    tag: str | None, busy: frozenset[str],
) -> list[Difference]:
    """Hidden files a crash left in a host's disks directory (`where`) or the image store
    (None): partial disk files named by an instance id (this store's if it issued the id;
    an instance with a task in flight may be making one), and storage probes of a killed
    `host add` (this store's if they carry its tag)."""
    place = f"on {where}" if where else "in the image store"
    found = []
    for instance_id in sorted(set(partial_disks) - busy):
        if instance_id in ours.ids:
            found.append(Difference("partial-disk", where, instance_id, "a half-made copy of "
                                    f"its disk {place} (a crash cut a clone or an unlinking)",
                                    fixable=True))
        else:
            found.append(_foreign("partial-disk", where, instance_id, "a half-made disk copy"))
    for name, probe_tag in sorted(probes.items()):
        if tag and probe_tag == tag:
            found.append(Difference("probe-file", where, name, f"a storage probe {place} "
                                    "that a killed `host add` left", fixable=True))
        else:
            found.append(_foreign("probe-file", where, name, "a storage probe"))
    return found
