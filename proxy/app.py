"""The proxy's app factory. Nothing happens at import; resources open in ``cleanup_ctx``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.appkeys import (
    catalog_key,
    db_key,
    metrics_key,
    runtime_key,
    serving_key,
    settings_key,
    verifier_key,
)
from proxy.catalog import ModelCatalog
from proxy.db import Database
from proxy.metrics import Metrics
from proxy.middleware import auth_middleware, error_middleware, request_id_middleware
from proxy.quota import reclaim_stale_reservations
from proxy.ratelimit import RateLimiter
from proxy.routes import setup_routes
from proxy.serving import Serving
from proxy.settings import Settings
from proxy.verifier import KeyVerifier
from runtime.client import RuntimeClient

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[settings_key] = settings
    app[metrics_key] = Metrics()
    app.cleanup_ctx.extend([_database, _runtime, _serving])
    setup_routes(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    async with Database.open(settings.database_path, synchronous=settings.db_synchronous) as db:
        reclaimed = await reclaim_stale_reservations(db, settings.request_timeout + 60)
        if reclaimed:
            log.info("released %d quota reservation(s) left by a process that died", reclaimed)
        app[db_key] = db
        yield


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    # A daemon that is down must turn into a 503 well within a second, not a wait.
    client = RuntimeClient(app[settings_key].runtime_endpoint, connect_wait=0.3)
    await client.start()
    app[runtime_key] = client
    yield
    await client.close()


async def _serving(app: web.Application) -> AsyncIterator[None]:
    settings, db, runtime = app[settings_key], app[db_key], app[runtime_key]
    app[verifier_key] = KeyVerifier(db, concurrency=settings.argon2_concurrency)
    app[catalog_key] = ModelCatalog(runtime)
    app[serving_key] = Serving(
        db=db,
        runtime=runtime,
        catalog=app[catalog_key],
        limiter=RateLimiter(),
        metrics=app[metrics_key],
        request_timeout=settings.request_timeout,
    )
    yield
