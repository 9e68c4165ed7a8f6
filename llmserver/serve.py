"""Build the proxy app (and mount the admin app) and serve it, within the connection limits.

``web.run_app`` cannot take a request handler of our own, so this is its loop written out (for the
proxy, and for the console served alone): an
:class:`~proxy.connection.handler.GuardedAppRunner` (header, write and connection limits, protocol errors in
the OpenAI envelope), one TCP site, a loop exception handler that turns failed ``accept()`` calls
into one warning a minute, and a clean stop on SIGINT or SIGTERM. Start-up problems (the port taken,
the database not writable) surface as :class:`ServeError`, one sentence naming the setting or path.

While it serves, the process holds the database's serving lock (``llmserver restore`` refuses to
run under it) and tells systemd and the terminal the truth about its state
(:mod:`llmserver.supervision.proxy`): ``READY=1`` and ``llmserver up``'s banner come only once the warm-up
is done and the database and the runtime answer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from admin_ui.app import create_admin_app
from admin_ui.appkeys import login_gate_key
from llmserver.supervision.proxy import proxy_supervision
from llmserver.supervision.sdnotify import Notifier
from proxy import accesslog
from proxy.app import create_app
from proxy.appkeys import db_key, lifecycle_key, metrics_key, runtime_key
from proxy.connection.handler import ConnectionGuard, GuardedAppRunner
from proxy.connection.limits import ACCEPT_BACKLOG, AcceptErrorFilter, connection_limit
from proxy.middleware import hide_server_version
from proxy.settings import Settings
from proxy.storage.errors import StorageError
from proxy.storage.servinglock import serving

log = logging.getLogger(__name__)

# After an early answer (401, 408, 413) aiohttp reads and drops the rest of the body so the client
# sees the answer; 10 s by default, which a client dripping a body would use up every time.
LINGERING_TIME = 1.0


class ServeError(Exception):
    """The proxy could not start; the message is one sentence for the operator."""


def build_app(settings: Settings) -> web.Application:
    """The proxy with the admin console at ``/admin`` (sharing its database writer and runtime client).

    Without ``LLMSERVER_SESSION_KEY`` the console is left out, with a warning: the API still serves.
    """
    app = create_app(settings)
    if settings.session_key is None:
        log.warning("the admin console at /admin is off: LLMSERVER_SESSION_KEY is not set")
        return app
    admin = create_admin_app(
        settings, db=lambda: app[db_key], runtime=lambda: app[runtime_key], lifecycle=lambda: app[lifecycle_key]
    )
    app.add_subapp("/admin", admin)
    app[metrics_key].watch_gate("login", admin[login_gate_key].stats)
    return app


@dataclass(frozen=True)
class Site:
    """Where one server listens, and the setting that says so (named when it cannot listen there)."""

    host: str
    port: int
    setting: str


def serve(settings: Settings, print_ready: str | None = None) -> None:
    """Serve until SIGINT or SIGTERM; :class:`ServeError` when it cannot start."""
    try:
        lock = serving(settings.database_path)
        lock.__enter__()
    except OSError as exc:
        raise ServeError(
            f"the database directory {settings.database_path.parent} cannot be used: {exc.strerror or exc}"
        ) from None

    def make_app() -> web.Application:
        app = build_app(settings)
        app.cleanup_ctx.append(proxy_supervision(Notifier.from_env(), print_ready))  # READY=1 and the banner
        return app

    try:
        asyncio.run(_serve(make_app, settings, Site(settings.bind_host, settings.bind_port, "LLMSERVER_BIND_ADDRESS")))
    finally:
        lock.__exit__(None, None, None)


def serve_admin(settings: Settings) -> None:
    """The console alone on ``LLMSERVER_ADMIN_BIND_ADDRESS`` (``llmserver admin serve``), within the
    same connection limits as the proxy (issue 18: aiohttp's own server had no header or body deadline)."""

    def make_app() -> web.Application:
        root = web.Application()
        root.on_response_prepare.append(hide_server_version)
        root.add_subapp("/admin", create_admin_app(settings))
        root.router.add_get("/", _to_admin)
        return root

    site = Site(settings.admin_bind_host, settings.admin_bind_port, "LLMSERVER_ADMIN_BIND_ADDRESS")
    announce = f"llmserver admin console on {site.host}:{site.port}/admin/\n"
    asyncio.run(_serve(make_app, settings, site, announce))


async def _to_admin(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/admin/")


async def _serve(
    make_app: Callable[[], web.Application], settings: Settings, site: Site, announce: str | None = None
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrorFilter())
    guard = ConnectionGuard(
        connection_limit(settings.max_connections),
        settings.header_timeout,
        settings.write_timeout,
        settings.body_timeout,
    )
    runner = GuardedAppRunner(
        make_app(),
        guard,
        access_log=logging.getLogger("llmserver.access") if settings.log_level == "DEBUG" else None,
        handler_cancellation=False,
        keepalive_timeout=settings.keepalive_timeout,
        lingering_time=LINGERING_TIME,
    )
    # SIGINT/SIGTERM handled from the start: one that arrives while starting (or just after the banner)
    # stops the server cleanly instead of killing the process half-way.
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _start(runner, settings, site)
        log.info("serving on %s:%d (at most %d connections)", site.host, site.port, guard.limit)
        if announce:
            sys.stdout.write(announce)
            sys.stdout.flush()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        accesslog.flush()  # the last requests' lines, before the process's own last words


async def _start(runner: web.AppRunner, settings: Settings, where: Site) -> None:
    try:
        await runner.setup()
    except StorageError as exc:
        raise ServeError(f"the database {settings.database_path} cannot be used: {_cause(exc)}") from None
    site = web.TCPSite(runner, where.host, where.port, ssl_context=ssl_context(settings), backlog=ACCEPT_BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        address = f"{where.setting}={where.host}:{where.port}"
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"{address}: the port is already in use by another program") from None
        raise ServeError(f"{address}: cannot listen there ({exc.strerror or exc})") from None


def _cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
