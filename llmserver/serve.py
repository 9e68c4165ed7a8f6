"""Build the proxy app (and mount the admin app) and serve it."""

from __future__ import annotations

import logging
import ssl
import sys

from aiohttp import web

from proxy.app import create_app
from proxy.settings import Settings


def serve(settings: Settings, print_ready: str | None = None) -> None:
    ssl_context = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(settings.tls_cert, settings.tls_key)
    web.run_app(
        create_app(settings),
        host=settings.bind_host,
        port=settings.bind_port,
        ssl_context=ssl_context,
        access_log=logging.getLogger("llmserver.access") if settings.log_level == "DEBUG" else None,
        print=(lambda _msg: sys.stdout.write(print_ready + "\n")) if print_ready else None,  # type: ignore[arg-type]
        handler_cancellation=False,
    )
