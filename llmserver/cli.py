"""``llmserver SUBCOMMAND``: the one command-line entry point.

Subcommands import their package lazily, so ``llmserver runtime`` never loads the proxy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _runtime(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from runtime.cli import add_runtime_arguments, run_runtime

    p = sub.add_parser("runtime", help="run the runtime daemon (keeps models loaded)")
    add_runtime_arguments(p)
    p.set_defaults(func=run_runtime)


def _chat(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from runtime.chatcli import add_chat_arguments, run_chat

    p = sub.add_parser("chat", help="stream one chat answer straight from the runtime daemon")
    add_chat_arguments(p)
    p.set_defaults(func=run_chat)


def _proxy_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from proxy.cli import add_proxy_commands
    except ImportError:
        return
    add_proxy_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmserver", description=__doc__.splitlines()[0] if __doc__ else "")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_runtime, _chat, _proxy_commands):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from runtime.errors import RuntimeServiceError

    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except RuntimeServiceError as exc:
        sys.stderr.write(f"llmserver {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
