"""The admin app factory: an aiohttp sub-application, mounted at ``/admin`` or served alone.

``create_admin_app(settings)`` opens its own database and runtime client (``llmserver admin
serve``); the proxy passes providers for its own (``db=lambda: ...``) so one process keeps one
database writer. The same goes for the model lifecycle: ``lifecycle=`` gives the proxy's (so an
action in the console pokes the proxy's reconciler at once); alone, the console makes its own,
registry only (the proxy's reconciler, polling the database, acts on what it changes). The JSON
API (``admin_ui.api``, one module per resource) answers under ``/admin/api`` behind the console's own
authentication: :func:`api_auth` is its one auth dependency. Pages (``admin_ui.views``) and API
modules never import each other; what both need is in ``admin_ui.actions`` and ``admin_ui.filters``.

Nothing happens at import; resources open in ``cleanup_ctx``. Middlewares, outer to inner:
security headers and errors, the encrypted session, authentication and CSRF.

Reads go through ``Database.execute_read`` (a small pool of read-only connections on threads, set up
like every other connection here: WAL, busy timeout, ``query_only``), not through aiosqlite: it is
already asynchronous for the event loop, runs the two usage scans side by side, and keeps one way of
opening the database. aiosqlite would add a second connection path (one thread per connection) for
the same result.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session

from admin_ui.api.common import error as api_error
from admin_ui.api.hf_tokens import setup_hf_token_routes
from admin_ui.api.keys import setup_key_routes
from admin_ui.api.models import setup_model_routes
from admin_ui.api.reports import setup_report_routes
from admin_ui.api.requests import setup_request_routes
from admin_ui.api.tokens import setup_token_routes
from admin_ui.api.users import setup_user_routes
from admin_ui.appkeys import (
    ModelLister,
    db_key,
    hasher_key,
    login_gate_key,
    monitor_key,
    principal_key,
    reports_key,
    runtime_key,
    series_key,
    settings_key,
)
from admin_ui.audited import actor_of
from admin_ui.flash import take
from admin_ui.monitor import SystemMonitor
from admin_ui.security import UNSAFE, auth_middleware, headers_middleware, headers_on_prepare
from admin_ui.session import csrf_token, setup_sessions
from admin_ui.views import (
    account,
    audit_log,
    dashboard,
    hf_tokens,
    keys,
    login,
    models,
    requests,
    tokens,
    usage,
    users,
)
from proxy.auth.apikey import create_password_hasher
from proxy.auth.gate import Argon2Gate
from proxy.lifecycle.service import Lifecycle
from proxy.settings import Settings
from proxy.storage.audit import Actor
from proxy.storage.database import Database
from proxy.storage.usage_report import UsageReports
from proxy.storage.usage_series import UsageSeries
from runtime.api.client import RuntimeClient

HERE = Path(__file__).resolve().parent
LOGIN_THREADS = 1  # argon2 threads for console logins (API keys have their own: LLMSERVER_ARGON2_CONCURRENCY)
LOGINS_PER_ADDRESS = 2  # login attempts one client address (or one account name) may have in flight
VIEWS = (login, dashboard, keys, requests, usage, users, audit_log, account, tokens, models, hf_tokens)


def create_admin_app(
    settings: Settings,
    *,
    db: Callable[[], Database] | None = None,
    runtime: Callable[[], ModelLister] | None = None,
    lifecycle: Callable[[], Lifecycle] | None = None,
) -> web.Application:
    """The console. Raises ``SessionKeyMissingError`` without ``LLMSERVER_SESSION_KEY``.

    ``lifecycle`` is called once, here (the proxy builds its Lifecycle without I/O and starts it in
    its own ``cleanup_ctx``, which runs before this sub-application's).
    """
    # aiohttp-session and aiohttp-jinja2 keep per-request state under string keys; that is theirs to change.
    warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, module=r"aiohttp_(session|jinja2)")
    app = web.Application(middlewares=[headers_middleware])
    app.on_response_prepare.append(headers_on_prepare)
    app[settings_key] = settings
    app[login_gate_key] = Argon2Gate(
        "login",
        concurrency=LOGIN_THREADS,
        per_address=LOGINS_PER_ADDRESS,
        hasher=create_password_hasher(settings.argon2_profile),
    )
    setup_sessions(app, settings)
    app.middlewares.append(auth_middleware)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        context_processors=[_context],
        filters={"ts": format_time, "iso": format_iso, "num": format_number, "bytes": format_bytes, "ms": format_ms},
    )
    app.cleanup_ctx.append(_database(settings, db))
    app.cleanup_ctx.append(_runtime(settings, runtime))
    app.cleanup_ctx.append(_services)
    shared = lifecycle() if lifecycle is not None else _own_lifecycle(app, settings)
    setup_key_routes(app, auth=api_auth, prefix="/api")
    setup_user_routes(app, auth=api_auth, prefix="/api")
    setup_token_routes(app, auth=api_auth, prefix="/api")
    setup_report_routes(app, auth=api_auth, prefix="/api", per_key="/usage")
    setup_model_routes(app, shared, auth=api_auth, runtime=lambda: app[runtime_key], prefix="/api")
    setup_hf_token_routes(app, shared, auth=api_auth, prefix="/api")
    setup_request_routes(app, lambda: app[db_key], auth=api_auth, prefix="/api")
    app.router.add_static("/static/", HERE / "static", name="static")
    for view in VIEWS:
        app.add_routes(view.routes)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


def _database(settings: Settings, given: Callable[[], Database] | None) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[db_key] = given()
            yield
            return
        async with Database.open(settings.database_path, synchronous=settings.db_synchronous) as db:
            app[db_key] = db
            yield

    return ctx


def _runtime(settings: Settings, given: Callable[[], ModelLister] | None) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if given is not None:
            app[runtime_key] = given()
            yield
            return
        client = RuntimeClient(settings.runtime_endpoint, connect_wait=0.3)
        await client.start()
        app[runtime_key] = client
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await client.close()

    return ctx


def _own_lifecycle(app: web.Application, settings: Settings) -> Lifecycle:
    """``llmserver admin serve``: a registry on the console's database, without a reconciler."""
    own = Lifecycle(settings.model_config_dir, settings.hf_cache, settings.vault() if settings.encryption_key else None)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        await own.start(app[db_key], None)
        yield
        await own.close()

    app.cleanup_ctx.append(ctx)
    return own


async def api_auth(request: web.Request, admin_only: bool) -> Actor:
    """The JSON API's one auth dependency (``admin_ui.api.common.guard``). The console's middleware
    has already authenticated the request (session plus CSRF on a change, or an admin API token);
    here: only ``admin`` writes, and reads ``admin_only`` (users, tokens, Hugging Face tokens)."""
    principal = request.get(principal_key)
    if principal is None:
        raise api_error(401, "log in, or send an admin API token", "unauthorized")
    if request.method in UNSAFE and not principal.can_write:
        raise api_error(403, "this account (or token) may only read", "forbidden")
    if admin_only and not principal.can_write:
        raise api_error(403, "this is for admins only", "forbidden")
    return actor_of(request)


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    app[hasher_key] = create_password_hasher(settings.argon2_profile)
    app[monitor_key] = SystemMonitor(settings.database_path.parent, root=settings.monitor_root)
    app[reports_key] = UsageReports(app[db_key])
    app[series_key] = UsageSeries(app[db_key])
    yield
    app[login_gate_key].close()


async def _context(request: web.Request) -> dict[str, Any]:
    principal = request.get(principal_key)
    csrf = principal.csrf if principal is not None else csrf_token(await get_session(request))
    flash = await take(request)
    return {"me": principal, "csrf": csrf, "path": request.path, "now_ts": time.time(), "flash": flash}


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound(text="there is no such page")


def format_time(value: float | None) -> str:
    if value is None:
        return "never"
    moment = _moment(value)
    return "invalid time" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_iso(value: float) -> str:
    moment = _moment(value)
    return "" if moment is None else moment.isoformat(timespec="seconds")


def _moment(value: float) -> datetime | None:
    """A stored time as a date, or None for one no date can show (a page still renders, issue 19)."""
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, ValueError, OSError, TypeError):
        return None


def format_number(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


def format_ms(value: float | None) -> str:
    """A duration in milliseconds, as the ledger stores it ("—" when it has none)."""
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} TiB"
