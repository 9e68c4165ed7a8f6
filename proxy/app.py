"""The proxy's app factory. Nothing happens at import; resources open in ``cleanup_ctx``.

``create_app(settings)`` opens the real database and runtime client; tests pass their own
(``runtime=`` a scripted fake, ``db=`` an open database) to run the whole app in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from proxy.appkeys import (
    catalog_key,
    db_key,
    generations_key,
    lifecycle_key,
    meter_key,
    metrics_key,
    runtime_key,
    settings_key,
    verifier_key,
)
from proxy.auth.apikey import create_password_hasher
from proxy.auth.verifier import KeyVerifier
from proxy.cors import add_cors_headers, cors_middleware
from proxy.lifecycle.service import Lifecycle
from proxy.metering.admission import Admission, RuntimeModels
from proxy.metering.generation import Generations
from proxy.metering.meter import Meter
from proxy.metering.ratelimit import RateLimiter
from proxy.metrics import Metrics
from proxy.middleware import auth_middleware, error_middleware, hide_server_version, request_middleware
from proxy.openai.routes import setup_routes
from proxy.ops.health import setup_ops
from proxy.settings import Settings
from proxy.speech.routes import setup_speech
from proxy.storage.database import Database
from proxy.storage.owner import ReservationOwner
from proxy.storage.usage import reclaim_stale_reservations
from proxy.storage.usage_report import purge_events
from proxy.upstream import ModelCatalog, Runtime
from runtime.api.client import RuntimeClient

log = logging.getLogger(__name__)

RECLAIM_EVERY = 60.0  # seconds between sweeps for reservations left by a process that died


def create_app(settings: Settings, *, runtime: Runtime | None = None, db: Database | None = None) -> web.Application:
    cors = [cors_middleware] if settings.cors_origins else []  # every middleware costs every request
    app = web.Application(
        middlewares=[request_middleware, *cors, error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app.on_response_prepare.append(hide_server_version)  # also for the admin console mounted under it
    app[settings_key] = settings
    if settings.cors_origins:
        app.on_response_prepare.append(add_cors_headers)  # streamed answers too (issue 25)
    app[metrics_key] = Metrics()
    app.cleanup_ctx.append(_given_database(db) if db is not None else _database)
    app.cleanup_ctx.append(_given_runtime(runtime) if runtime is not None else _runtime)
    app[lifecycle_key] = Lifecycle(
        settings.model_config_dir, settings.hf_cache, settings.vault() if settings.encryption_key else None
    )
    app.cleanup_ctx.append(_lifecycle)
    app.cleanup_ctx.extend([_reclaimer, _services, _retention])  # reservations owned before any request
    setup_ops(app)  # the warm-up, after the services
    setup_routes(app)
    setup_speech(app)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    async with Database.open(settings.database_path, synchronous=settings.db_synchronous) as db:
        app[db_key] = db
        yield


def _given_database(db: Database) -> Callable[[web.Application], AsyncIterator[None]]:
    async def given(app: web.Application) -> AsyncIterator[None]:
        app[db_key] = db
        yield

    return given


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    # A daemon that is down must turn into a 503 well within a second, not a wait.
    client = RuntimeClient(app[settings_key].runtime_endpoint, connect_wait=0.3)
    await client.start()
    app[runtime_key] = client
    yield
    await client.close()


def _given_runtime(runtime: Runtime) -> Callable[[web.Application], AsyncIterator[None]]:
    async def given(app: web.Application) -> AsyncIterator[None]:
        app[runtime_key] = runtime
        yield

    return given


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """The model registry and the reconciler that makes the runtime hold what it says."""
    await app[lifecycle_key].start(app[db_key], app[runtime_key])
    await app[lifecycle_key].serve()
    yield
    await app[lifecycle_key].close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings, db, runtime = app[settings_key], app[db_key], app[runtime_key]
    verifier = app[verifier_key] = KeyVerifier(
        db, concurrency=settings.argon2_concurrency, hasher=create_password_hasher(settings.argon2_profile)
    )
    app[metrics_key].watch_gate("key", verifier.gate.stats)
    app[metrics_key].ledger_owed.set_function(lambda: len(db.owed))
    app[catalog_key] = ModelCatalog(runtime, idle=app[lifecycle_key].idle_models)
    admission = Admission(db, RateLimiter(), zone=settings.budget_zone)  # one set of windows for every endpoint
    meter = app[meter_key] = Meter(db, admission, app[metrics_key])
    lifecycle = app[lifecycle_key]
    models = RuntimeModels(app[catalog_key], warm=lifecycle.ensure, starting=lifecycle.starting)
    app[generations_key] = Generations(meter, runtime, models, request_timeout=settings.request_timeout)
    yield
    # The server cancelled what was still running; let those requests (every front's) write their
    # rows before the database closes (its cleanup runs after this one).
    await meter.drain(timeout=10.0)
    verifier.gate.close()


async def _reclaimer(app: web.Application) -> AsyncIterator[None]:
    """This process as the owner of its reservations; release those of processes that died: at
    start-up (a restart frees what the requests it cut held), then every minute."""
    db, bound = app[db_key], app[settings_key].request_timeout + 60
    try:
        owner: ReservationOwner | None = ReservationOwner.claim(db.path)
    except OSError as exc:  # a directory the owners' locks cannot live in: reclaimed by age, as before
        log.warning("quota reservations will be reclaimed by age only: %s", exc)
        owner = None
    db.reservation_owner = owner.id if owner else None
    reclaimed = await reclaim_stale_reservations(db, bound)
    if reclaimed:
        log.info("released %d quota reservation(s) left by a process that died", reclaimed)
    task = asyncio.create_task(_reclaim_forever(db, bound))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if owner is not None:
        owner.close()


async def _reclaim_forever(db: Database, bound: float) -> None:
    while True:
        await asyncio.sleep(RECLAIM_EVERY)
        try:
            await reclaim_stale_reservations(db, bound)
        except Exception as exc:  # the next sweep tries again
            log.warning("could not reclaim stale reservations: %s", exc)


RETENTION_EVERY = 3600.0  # seconds between sweeps of raw usage events past the retention


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """With LLMSERVER_USAGE_RETENTION_DAYS, delete older raw events hourly (daily rollups stay)."""
    days = app[settings_key].usage_retention_days
    task = None if days is None else asyncio.create_task(_purge_forever(app[db_key], days))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _purge_forever(db: Database, days: float) -> None:
    while True:
        try:
            purged = await purge_events(db, days)
            if purged:
                log.info("deleted %d raw usage events older than %g days (rollups kept)", purged, days)
        except Exception as exc:  # the next sweep tries again
            log.warning("could not apply the usage retention: %s", exc)
        await asyncio.sleep(RETENTION_EVERY)
