"""Build the proxy app (and mount the admin app) and serve it.

While it serves, the process holds the database's serving lock (``llmserver restore`` refuses to
run under it) and tells systemd and the terminal the truth about its state
(:mod:`llmserver.supervision`): ``READY=1`` and ``llmserver up``'s banner come only once the warm-up
is done and the database and the runtime answer.
"""

from __future__ import annotations

import logging
import ssl

from aiohttp import web

from llmserver.sdnotify import Notifier
from llmserver.supervision import proxy_supervision
from proxy.app import create_app
from proxy.settings import Settings
from proxy.storage.servinglock import serving


def serve(settings: Settings, print_ready: str | None = None) -> None:
    ssl_context = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(settings.tls_cert, settings.tls_key)
    app = create_app(settings)
    app.cleanup_ctx.append(proxy_supervision(Notifier.from_env(), print_ready))
    with serving(settings.database_path):
        web.run_app(
            app,
            host=settings.bind_host,
            port=settings.bind_port,
            ssl_context=ssl_context,
            access_log=logging.getLogger("llmserver.access") if settings.log_level == "DEBUG" else None,
            print=None,
            handler_cancellation=False,
        )
