"""``llmserver proxy``, ``llmserver up`` and ``llmserver keys``."""

from __future__ import annotations

import argparse
import logging
import ssl
import sys
from collections.abc import Sequence

from aiohttp import web

from proxy.app import create_app
from proxy.keycli import add_key_commands
from proxy.settings import Settings, checked_settings, setup_logging

log = logging.getLogger(__name__)


def add_proxy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from proxy.up import add_up_arguments, run_up

    p = sub.add_parser("proxy", help="run the OpenAI-compatible proxy (needs a running runtime)")
    p.set_defaults(func=run_proxy_command)
    up = sub.add_parser("up", help="start the runtime and the proxy together on their defaults")
    add_up_arguments(up)
    up.set_defaults(func=run_up)
    add_key_commands(sub)


def run_proxy_command(args: argparse.Namespace) -> int:
    settings = checked_settings("llmserver proxy")
    if settings is None:
        return 2
    setup_logging(settings)
    serve(settings)
    return 0


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmserver-proxy", description="the llmserver proxy")
    parser.parse_args(argv)
    return run_proxy_command(argparse.Namespace())


if __name__ == "__main__":
    sys.exit(main())
