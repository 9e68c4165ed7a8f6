"""Build the proxy app (and mount the admin app) and serve it."""

from __future__ import annotations

import logging
import ssl
import sys

from aiohttp import web

from admin_ui.app import create_admin_app
from proxy.app import create_app
from proxy.appkeys import db_key, lifecycle_key, runtime_key
from proxy.settings import Settings

log = logging.getLogger(__name__)


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
    return app


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def serve(settings: Settings, print_ready: str | None = None) -> None:
    web.run_app(
        build_app(settings),
        host=settings.bind_host,
        port=settings.bind_port,
        ssl_context=ssl_context(settings),
        access_log=logging.getLogger("llmserver.access") if settings.log_level == "DEBUG" else None,
        print=(lambda _msg: sys.stdout.write(print_ready + "\n")) if print_ready else None,  # type: ignore[arg-type]
        handler_cancellation=False,
    )


def serve_admin(settings: Settings) -> None:
    """The console alone on ``LLMSERVER_ADMIN_BIND_ADDRESS`` (``llmserver admin serve``)."""
    root = web.Application()
    root.add_subapp("/admin", create_admin_app(settings))

    async def to_admin(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/admin/")

    root.router.add_get("/", to_admin)
    web.run_app(
        root,
        host=settings.admin_bind_host,
        port=settings.admin_bind_port,
        ssl_context=ssl_context(settings),
        print=lambda _msg: sys.stdout.write(
            f"llmserver admin console on {settings.admin_bind_host}:{settings.admin_bind_port}/admin/\n"
        ),  # type: ignore[arg-type]
    )
