"""``llmserver proxy`` (alias ``llmserver-proxy``): the proxy alone, against a running daemon."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from llmserver.logging import setup_logging
from llmserver.serve import ServeError, serve
from proxy.settings import checked_settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", help="run the OpenAI-compatible proxy (needs a running runtime)")
    p.set_defaults(func=run_proxy_command)


def run_proxy_command(args: argparse.Namespace) -> int:
    settings = checked_settings("llmserver proxy")
    if settings is None:
        return 2
    setup_logging(settings)
    try:
        serve(settings)
    except ServeError as exc:
        sys.stderr.write(f"llmserver proxy: {exc}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmserver-proxy", description="the llmserver proxy")
    parser.parse_args(argv)
    return run_proxy_command(argparse.Namespace())


if __name__ == "__main__":
    sys.exit(main())
