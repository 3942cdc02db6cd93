"""The FastAPI application: middleware, Nova's error bodies, the routers."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors
from api.deps import ContextPool
from api.identity import Strategy
from api.middleware import RequestContextMiddleware
from api.policy import Policy
from api.routers import (
    actions,
    create,
    flavors,
    hypervisors,
    images,
    instance_actions,
    servers,
    versions,
)

ROUTERS = (versions.router, servers.router, create.router, actions.router,
           instance_actions.router, flavors.router, hypervisors.router, images.router)


def create_app(contexts: ContextPool, identity: Strategy, policy: Policy) -> FastAPI:
    app = FastAPI(title="shelf compute API",
                  description="A subset of the OpenStack Compute API (microversions "
                  "2.1-2.96) and of the Image API v2, over shelf's event store.",
                  version="2.96", docs_url=None, redoc_url=None)
    app.state.contexts = contexts
    app.state.identity = identity
    app.state.policy = policy
    errors.install(app)
    app.add_middleware(RequestContextMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    extra = identity.router()
    if extra is not None:
        app.include_router(extra)
    return app
