"""`shelf host remove`: a host leaves the catalog, and so placement and `host list`.

Refused while instances hold claims there. With `force`, the instances holding them are
deleted the way Nova's API deletes an instance whose compute host is down ("local
delete"): a recorded delete that leaves on the host whatever the instance has there, for
`reconcile` (should the host ever be added again); the claim is released in the same
transaction as the removal. The rest of each delete (its image, its volume, `Deleted`)
is carried out by `serve` as any delete is.
"""

from __future__ import annotations

import uuid

from domain.errors import Conflict
from domain.host import CATALOG_ID, Host, HostCatalog
from domain.instance import Instance
from domain.service import SAVE_ATTEMPTS, RecordConflict, Repository, find, resolve_host
from domain.states import DELETED

FORCED_REASON = ("host {host} removed with --force: deleted without it; what is left "
                 "there is for `shelf reconcile` should the host be added again")


def remove_host(
    repo: Repository, name: str, force: bool, user: str, request_id: str
) -> list[Instance]:
    """Remove the host; returns the instances deleted without it (`force` only)."""
    for _ in range(SAVE_ATTEMPTS):  # a claim or a step recorded meanwhile: look again
        host = resolve_host(repo, name)
        catalog = find(repo, CATALOG_ID, HostCatalog) or HostCatalog()
        instances = _delete_holders(repo, host, user, request_id) if force else []
        host.remove(user, request_id)  # refused while claims remain
        catalog.unregister(name)
        try:
            repo.save(host, catalog, *instances)
        except RecordConflict:
            continue
        return instances
    raise Conflict(f"host {name}: lost {SAVE_ATTEMPTS} races with its instances; try again")


def _delete_holders(repo: Repository, host: Host, user: str, request_id: str) -> list[Instance]:
    """Local delete of each instance with a claim on `host`, and the claim released."""
    deleted = []
    for instance_id in sorted(host.claims):
        instance = find(repo, uuid.UUID(instance_id), Instance)
        host.release(instance_id, user, request_id)  # a claim no instance holds, too
        if instance is None or instance.claim_host != host.name or instance.vm_state == DELETED:
            continue
        instance.request_local_delete(host.name, FORCED_REASON.format(host=host.name),
                                      user, request_id)
        instance.record_claim_released(user=user, request_id=instance.request_id or request_id,
                                       host=host.name)
        deleted.append(instance)
    return deleted
