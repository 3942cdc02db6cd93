"""How a `serve` on SQLite learns of its work: it follows the notification log, every
POLL_SECONDS (one machine, usually one serve: docs/fleet.md). On PostgreSQL a serve is
told instead (application/push_feed.py).

An event of an instance wakes a drive of it, unless, with `serve --host`, the event
names a host another serve owns (its next step is almost always on that host; should it
not be, the sweep finds it). tests/unit/test_handoff_rule.py checks that rule.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable

from eventsourcing.persistence import Notification

from adapters.wakeups import Told
from application.bootstrap import Context
from domain.host import Host
from domain.service import find

INSTANCE_TOPIC = "domain.instance:Instance."
HOST_REPLACED_TOPICS = frozenset({"domain.host:Host.HostRemoved",
                                  "domain.host:Host.HostAddedAgain"})
POLL_SECONDS = 0.02  # a new request waits at most this long for a worker to see it
NOTIFICATION_BATCH = 1000


class PollFeed:
    def __init__(self, ctx: Context, hosts: frozenset[str] | None) -> None:
        self.ctx, self.hosts = ctx, hosts
        self.position = 0
        self._backlog = False

    def start(self) -> None:
        self.position = self.ctx.projector.position()

    def wait(self, timeout: float, stop: threading.Event) -> Told:
        """The events since the last call, read after POLL_SECONDS unless a full batch
        was read last time. (Reading again at once while busy read a few events a time,
        and cost serve more CPU than the steps' own drives: they go on from their own
        events and need no poll.)"""
        if not self._backlog:
            stop.wait(min(timeout, POLL_SECONDS))
        notifications = self.ctx.app.recorder.select_notifications(
            self.position, NOTIFICATION_BATCH, inclusive_of_start=False)
        self._backlog = len(notifications) == NOTIFICATION_BATCH
        told = Told(notices=len(notifications))
        if notifications:
            self.position = notifications[-1].id
            told.hosts = self._replaced_hosts(notifications)
            for notification in notifications:
                if notification.topic.startswith(INSTANCE_TOPIC) and self._ours(notification):
                    instance_id = uuid.UUID(str(notification.originator_id))
                    told.work[instance_id] = notification.originator_version
        return told

    def nudge(self) -> None:
        """Nothing: the next poll is at most POLL_SECONDS away."""

    def _ours(self, notification: Notification) -> bool:
        return self.hosts is None or self._event_host(notification) in (None, *self.hosts)

    def _replaced_hosts(self, notifications: Iterable[Notification]) -> set[str]:
        names = set()
        for notification in notifications:
            if notification.topic in HOST_REPLACED_TOPICS:
                host = find(self.ctx.repo, uuid.UUID(str(notification.originator_id)), Host)
                if host is not None:
                    names.add(host.name)
        return names

    def _event_host(self, notification: Notification) -> str | None:
        """The host an event names; None if it names none, or can't be read (then it is
        driven: a drive that finds nothing of its own to do costs one load)."""
        mapper = self.ctx.app.mapper
        try:
            state = notification.state
            if mapper.cipher:
                state = mapper.cipher.decrypt(state)
            if mapper.compressor:
                state = mapper.compressor.decompress(state)
            host = mapper.transcoder.decode(state).get("host")
        except Exception:
            return None
        return host if isinstance(host, str) else None

    def close(self) -> None:
        return None
