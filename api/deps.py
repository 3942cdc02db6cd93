"""What every authenticated route gets: the caller, a store context, policy, microversion,
request id and the base URL for links, bundled as one FastAPI dependency."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from api.identity import caller
from api.microversion import Microversion
from api.policy import Policy
from application.bootstrap import Context
from application.identity import Caller


class ContextPool:
    """Store contexts for the request threads: one request uses one at a time (a context
    holds database connections that are not shared between threads)."""

    def __init__(self, store_url: str | None, data_dir: Path | None, size: int = 8) -> None:
        self.store_url, self.data_dir = store_url, data_dir
        self._idle: queue.LifoQueue[Context] = queue.LifoQueue()
        self._all: list[Context] = []
        self._slots = queue.Queue[None]()
        for _ in range(size):
            self._slots.put(None)

    @contextmanager
    def context(self) -> Iterator[Context]:
        self._slots.get()
        try:
            try:
                ctx = self._idle.get_nowait()
            except queue.Empty:
                ctx = Context(self.store_url, data_dir=self.data_dir)
                self._all.append(ctx)
            try:
                yield ctx
            finally:
                self._idle.put(ctx)
        finally:
            self._slots.put(None)

    def close(self) -> None:
        for ctx in self._all:
            ctx.close()


@dataclass(frozen=True)
class Call:
    caller: Caller
    ctx: Context
    policy: Policy
    version: Microversion
    request_id: str
    base: str  # scheme://host:port, for links

    def authorize(self, rule: str, project_id: str | None = None) -> None:
        self.policy.authorize(rule, self.caller, project_id)

    def allows(self, rule: str, project_id: str | None = None) -> bool:
        return self.policy.allows(rule, self.caller, project_id)


def _context(request: Request) -> Iterator[Context]:
    pool: ContextPool = request.app.state.contexts
    with pool.context() as ctx:
        yield ctx


def _call(request: Request, who: Annotated[Caller, Depends(caller)],
          ctx: Annotated[Context, Depends(_context)]) -> Call:
    state = request.scope["state"]
    return Call(caller=who, ctx=ctx, policy=request.app.state.policy,
                version=state["microversion"], request_id=state["request_id"],
                base=str(request.base_url).rstrip("/"))


CallDep = Annotated[Call, Depends(_call)]
