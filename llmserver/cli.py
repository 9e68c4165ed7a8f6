"""llmserver: the one command-line entry point; each command module registers itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmserver import __version__, up
from llmserver.commands import admin, backup, chat, doctor, keys, migrate, proxy, restore, runtime
from llmserver.commands import models as models_command
from llmserver.commands import vault as vault_command
from llmserver.envfile import load_service_environment
from proxy.errors import ProxyError
from proxy.storage.errors import StorageError
from runtime.api.errors import RuntimeServiceError

COMMANDS = (up, proxy, runtime, chat, keys, admin, models_command, vault_command, migrate, backup, restore, doctor)
SERVICES = ("up", "proxy", "runtime")  # they are the service: their environment is their own


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmserver", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--version", action="version", version=f"llmserver {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in SERVICES:  # the operator's commands see the managed service's settings
            load_service_environment(getattr(args, "env_file", None))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"llmserver {args.command}: error: reading the service's settings: {exc}\n")
        return 2
    try:
        code: int = args.func(args)
    except (RuntimeServiceError, ProxyError, StorageError) as exc:
        sys.stderr.write(f"llmserver {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
