"""``llmserver runtime`` (alias ``llmserver-runtime``): run the daemon."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from llmserver.logging import configure_logging
from llmserver.supervision.parent import ParentGoneError, die_with_parent
from llmserver.supervision.runtime import RuntimeSupervisor
from llmserver.supervision.sdnotify import Notifier
from runtime.api.errors import RuntimeServiceError
from runtime.api.models import ModelConfig, parse_model_spec
from runtime.backends.base import BackendError
from runtime.backends.demo import demo_model_config
from runtime.daemon.server import RuntimeServer
from runtime.daemon.settings import load_runtime_settings

log = logging.getLogger(__name__)


def add_model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=BACKEND:PATH[,key=value...]",
        help="load a model at start (repeatable); without any, the demo model loads",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("runtime", help="run the runtime daemon (keeps models loaded)")
    add_runtime_arguments(p)
    p.set_defaults(func=run_runtime)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_option(parser)
    parser.add_argument("--endpoint", help="ZeroMQ endpoint (default: $LLMSERVER_RUNTIME_ENDPOINT)")
    parser.add_argument("--queue-depth", type=int, help="requests waiting per model before 'busy'")
    parser.add_argument("--no-demo", action="store_true", help="start without the demo model")
    parser.add_argument(
        "--parent-pid", type=int, help="stop when this process is gone (llmserver up passes its own pid)"
    )


def model_configs(specs: Sequence[str], no_demo: bool = False) -> list[ModelConfig]:
    """``--model`` options, else ``$LLMSERVER_RUNTIME_MODELS`` (``;``-separated), else the demo model."""
    if not specs:
        specs = [s.strip() for s in os.environ.get("LLMSERVER_RUNTIME_MODELS", "").split(";") if s.strip()]
    configs = [parse_model_spec(s) for s in specs]
    if not configs and not no_demo:
        try:
            configs.append(demo_model_config())
        except BackendError as exc:
            # Serve without models (they can be loaded at run time) rather than exit: under
            # systemd an exit would only restart the daemon into the same error, forever.
            log.warning("no models to load: no --model, no LLMSERVER_RUNTIME_MODELS, and %s", exc)
    return configs


def run_runtime(args: argparse.Namespace) -> int:
    settings = load_runtime_settings()
    overrides = {}
    if args.endpoint:
        overrides["endpoint"] = args.endpoint
    if args.queue_depth:
        overrides["queue_depth"] = args.queue_depth
    if overrides:
        settings = type(settings)(**{**settings.__dict__, **overrides})
    configure_logging(settings.log_level, settings.log_format)
    configs = model_configs(args.model, args.no_demo)
    server = RuntimeServer(settings)
    if args.parent_pid is not None:
        try:
            die_with_parent(args.parent_pid, server.request_stop)
        except ParentGoneError as exc:
            log.error("not starting: %s", exc)
            return 1
    server.bind()
    server.preload(configs)
    notifier = Notifier.from_env()
    if notifier.enabled:  # under systemd (Type=notify): READY=1, the watchdog, STOPPING=1
        server.on_stop.append(notifier.stopping)
        RuntimeSupervisor(settings.endpoint, notifier, lambda: server.stopping).start()
    server.serve()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmserver-runtime", description="the llmserver runtime daemon")
    add_runtime_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_runtime(args)
    except RuntimeServiceError as exc:
        print(f"llmserver-runtime: error: {exc}", file=sys.stderr)  # noqa: T201 - CLI message
        return 2


if __name__ == "__main__":
    sys.exit(main())
