"""`reconcile`: what the store says against what every host and the image store have.

Instances with a task in flight are not judged (their steps are between states); their
belongings are not reported as leaks either. A libvirtd and a data directory may be shared
(other tools' domains, another shelf store, several shelf hosts on one daemon): only what is
provably this store's is judged (docs/ownership.md): domains and disks named with an
instance id it issued, DHCP entries with a MAC it issued and no other store's tag, images
marked with its id or (older ones) its instance or image ids. The rest is `foreign-…`, shown
only when asked for and never fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from domain.host import Host
from domain.instance import Instance
from domain.ownership import (
    FOREIGN,
    Difference,
    Issued,
    foreign_images,
    foreign_on_host,
    issued_by,
    leftover_differences,
    owns_image,
)
from domain.ports import HostDrivers, HypervisorError, ImageInfo, ImageStore
from domain.states import DELETED
from domain.store_identity import StoreMark

__all__ = ["Difference", "fix_leaks", "reconcile"]


@dataclass(frozen=True)
class InFlight:
    """What instances with a task in flight may legitimately have half-made."""

    ids: frozenset[str]
    macs: frozenset[str]
    images: frozenset[str]


def reconcile(
    instances: Iterable[Instance], hosts: Iterable[Host], drivers: HostDrivers,
    images: ImageStore, partial_images: Iterable[str] = (), *,
    store_id: str | None = None, include_foreign: bool = False,
) -> list[Difference]:
    instances, partial_images = list(instances), list(partial_images)
    live = [i for i in instances if i.vm_state != DELETED]
    moving = [i for i in live if not i.is_idle]
    busy = InFlight(
        ids=frozenset(str(i.id) for i in moving), macs=frozenset(i.mac for i in moving),
        images=frozenset(x for i in moving for x in (i.pending_image_id, i.shelved_image_id)
                         if x),
    )
    settled = [i for i in live if i.is_idle]
    ours = issued_by(instances)
    host_list = list(hosts)
    tag = StoreMark(store_id).tag if store_id else None
    found: list[Difference] = []
    for host in host_list:
        neighbours = {h.name for h in host_list if h.uri == host.uri and h.name != host.name}
        found += _host_differences(host, settled, _Judged(busy, ours, neighbours, tag), drivers)
    stored = images.list()
    owned = [image for image in stored if owns_image(image, store_id, ours)]
    found += _image_differences(settled, busy, owned, [p for p in partial_images
                                                      if p in ours.image_ids])
    found += foreign_images([i for i in stored if i not in owned], partial_images, ours)
    found += leftover_differences(None, (), images.probe_files(), ours, tag, busy.ids)
    return _shown(found, include_foreign)


def _shown(found: list[Difference], include_foreign: bool) -> list[Difference]:
    """Foreign things only when asked for, once each (hosts on one libvirtd see the same)."""
    seen: set[tuple[str, str]] = set()
    shown = []
    for difference in found:
        if difference.kind.startswith(FOREIGN):
            key = (difference.kind, difference.subject)
            if not include_foreign or key in seen:
                continue
            seen.add(key)
        shown.append(difference)
    return shown


@dataclass(frozen=True)
class _Judged:
    busy: InFlight
    ours: Issued
    neighbours: set[str]  # other shelf hosts on the same libvirt URI
    tag: str | None  # the store's, on the files it names


def _host_differences(
    host: Host, settled: list[Instance], judged: _Judged, drivers: HostDrivers
) -> list[Difference]:
    name = host.name
    try:
        driver = drivers.driver(name)
        domains, disks, dhcp = set(driver.domains()), set(driver.disks()), driver.dhcp_hosts()
        foreign = foreign_on_host(name, domains, disks, dhcp, driver.foreign_dhcp_hosts(),
                                  judged.ours)
        leftovers = leftover_differences(name, driver.partial_disks(), driver.probe_files(),
                                         judged.ours, judged.tag, judged.busy.ids)
    except (HypervisorError, KeyError) as error:
        return [Difference("unreachable-host", name, name, str(error))]
    disks &= judged.ours.ids
    on_neighbours = [i for i in settled if i.host in judged.neighbours]
    domains = (domains & judged.ours.ids) - {str(i.id) for i in on_neighbours}
    macs = (set(dhcp) & judged.ours.macs) - {
        i.mac for i in settled if i.network_host in judged.neighbours}
    want_domains = {str(i.id) for i in settled if i.host == name}
    want_disks = {str(i.id) for i in settled if i.host == name and not i.volume_backed}
    want_dhcp = {i.mac for i in settled if i.network_host == name}
    want_claims = {str(i.id) for i in settled if i.claim_host == name}
    claims = set(host.claims)
    busy = judged.busy
    return (
        _set_differences("domain", name, want_domains, domains - busy.ids, domains)
        + _set_differences("disk", name, want_disks, disks - busy.ids, disks)
        + _set_differences("dhcp-entry", name, want_dhcp, macs - busy.macs, set(dhcp))
        + _set_differences("claim", name, want_claims, claims - busy.ids, claims)
        + leftovers
        + foreign
    )


def _set_differences(
    kind: str, host: str, wanted: set[str], have_settled: set[str], have_all: set[str]
) -> list[Difference]:
    found = [Difference(f"orphan-{kind}", host, subject, f"{kind} on {host} that no instance "
                        "owns", fixable=True)
             for subject in sorted(have_settled - wanted)]
    found += [Difference(f"missing-{kind}", host, subject, f"the store expects this {kind} "
                         f"on {host}")
              for subject in sorted(wanted - have_all)]
    return found


def _image_differences(
    settled: list[Instance], busy: InFlight, stored: list[ImageInfo],
    partial_images: Iterable[str],
) -> list[Difference]:
    referenced = {i.shelved_image_id for i in settled if i.shelved_image_id}
    found = [
        Difference("leaked-image", None, image.id,
                   f"{image.name} is owned by no shelved instance", fixable=True)
        for image in stored
        if image.instance_id is not None and image.id not in referenced
        and image.id not in busy.images
    ]
    stored_ids = {image.id for image in stored}
    found += [
        Difference("missing-image", None, image_id,
                   "a shelved instance's image is not in the image store")
        for image_id in sorted(referenced - stored_ids)
    ]
    found += [
        Difference("partial-image", None, image_id, "a half-written image file", fixable=True)
        for image_id in partial_images if image_id not in busy.images
    ]
    return found


def fix_leaks(
    differences: Iterable[Difference], drivers: HostDrivers, images: ImageStore,
    release_claim: Callable[[str, str], None],
) -> list[Difference]:
    """Remove what no instance owns; return the differences that were fixed."""
    fixed = []
    for difference in differences:
        if not difference.fixable:
            continue
        host, subject = difference.host, difference.subject
        if difference.kind == "orphan-domain" and host:
            drivers.driver(host).undefine(subject)
        elif difference.kind == "orphan-disk" and host:
            drivers.driver(host).delete_disk(subject)
        elif difference.kind == "partial-disk" and host:
            drivers.driver(host).delete_partial_disk(subject)
        elif difference.kind == "probe-file":
            (drivers.driver(host) if host else images).delete_probe_file(subject)
        elif difference.kind == "orphan-dhcp-entry" and host:
            drivers.driver(host).remove_dhcp_host(subject)
        elif difference.kind == "orphan-claim" and host:
            release_claim(host, subject)
        elif difference.kind in ("leaked-image", "partial-image"):
            images.delete(subject)
        else:
            continue
        fixed.append(difference)
    return fixed
