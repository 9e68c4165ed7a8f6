"""``llmserver keys ...``: create, list and revoke API keys from the command line.

Each command reads the settings, migrates and opens the database, does its one thing and returns
an exit code. A new key is printed once, alone on the last line of the output. Errors are one
readable line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import TypeVar

from llmserver.commands.actor import cli_actor
from proxy.auth.apikey import create_password_hasher, key_minter
from proxy.errors import ProxyError
from proxy.settings import load_settings
from proxy.storage.api_keys import ApiKey, KeyRepository
from proxy.storage.bounds import parse_time
from proxy.storage.budget import PERIODS
from proxy.storage.database import Database
from proxy.storage.errors import StorageError, ValidationError

T = TypeVar("T")
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys create|list|revoke`` to a CLI; each sets ``args.func(args) -> int``."""
    keys = subparsers.add_parser("keys", help="manage API keys", description="Create, list and revoke API keys.")
    commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)

    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--token-limit", type=_non_negative_int, metavar="N", help="lifetime token quota")
    create.add_argument("--models", type=_model_list, metavar="A,B", help="only these models")
    create.add_argument(
        "--expires",
        type=parse_expiry,
        metavar="WHEN",
        help="YYYY-MM-DD (end of that day, UTC) or ISO 8601 time",
    )
    create.add_argument("--rpm", type=_positive_int, metavar="N", help="requests per minute")
    create.add_argument("--tpm", type=_positive_int, metavar="N", help="tokens per minute")
    create.add_argument("--budget-period", choices=PERIODS, help="the token limit resets daily, weekly or monthly")
    create.add_argument("--cidr", action="append", metavar="NET", help="allowed client network (repeatable)")
    create.set_defaults(func=create_command)

    listing = commands.add_parser("list", help="list keys (never their secrets)")
    listing.set_defaults(func=list_command)

    revoke = commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key", metavar="ID", help="the key's numeric id or public id")
    revoke.set_defaults(func=revoke_command)


def create_command(args: argparse.Namespace) -> int:
    async def create(repo: KeyRepository) -> tuple[str, ApiKey]:
        made = await repo.create_key(
            args.name,
            token_limit=args.token_limit,
            allowed_models=args.models,
            expires_at=args.expires,
            rpm_limit=args.rpm,
            tpm_limit=args.tpm,
            budget_period=getattr(args, "budget_period", None),
            allowed_cidrs=getattr(args, "cidr", None),
            by=cli_actor(),
        )
        return made

    result = _run(create)
    if result is None:
        return EXIT_ERROR
    full_key, key = result
    sys.stdout.write(f"created key {key.id} ({key.name}); it is shown only this once:\n{full_key}\n")
    return 0


def list_command(args: argparse.Namespace) -> int:
    async def list_all(repo: KeyRepository) -> list[ApiKey]:
        return await repo.list_keys()

    keys = _run(list_all)
    if keys is None:
        return EXIT_ERROR
    sys.stdout.write(format_table(keys, datetime.now(timezone.utc).timestamp()))
    return 0


def revoke_command(args: argparse.Namespace) -> int:
    ref: int | str = int(args.key) if args.key.isdigit() else args.key

    async def revoke(repo: KeyRepository) -> ApiKey:
        return await repo.revoke_key(ref, by=cli_actor())

    key = _run(revoke)
    if key is None:
        return EXIT_ERROR
    sys.stdout.write(f"revoked key {key.id} ({key.name}, ...{key.last_four})\n")
    return 0


def format_table(keys: Sequence[ApiKey], now: float) -> str:
    """A plain-text table of keys: id, name, last four, limit, used, requests, state, expires."""
    header = ("ID", "NAME", "LAST4", "LIMIT", "USED", "REQUESTS", "STATE", "EXPIRES")
    rows = [header] + [
        (
            str(key.id),
            key.name,
            key.last_four,
            "-" if key.token_limit is None else str(key.token_limit),
            str(key.tokens_used),
            str(key.request_count),
            key.state(now),
            "never" if key.expires_at is None else _format_time(key.expires_at),
        )
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def parse_expiry(text: str) -> float:
    """A unix time from ``YYYY-MM-DD`` (the end of that day, UTC) or an ISO 8601 time (UTC if naive),
    bounded as the console bounds it (:func:`proxy.storage.bounds.parse_time`); not in the past."""
    try:
        moment = parse_time("expires", text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if moment <= datetime.now(timezone.utc).timestamp():
        raise argparse.ArgumentTypeError(f"{text!r} is in the past")
    return moment


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m llmserver.commands.keys keys ...`` (the same commands as ``llmserver keys ...``)."""
    parser = argparse.ArgumentParser(prog="llmserver")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _run(action: Callable[[KeyRepository], Awaitable[T]]) -> T | None:
    """Run ``action`` against the configured database; on failure say why on stderr."""
    try:
        return asyncio.run(_with_repository(action))
    except (ProxyError, StorageError, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"llmserver keys: error: {exc}\n")
        return None


async def _with_repository(action: Callable[[KeyRepository], Awaitable[T]]) -> T:
    settings = load_settings()
    async with Database.open(settings.database_path, readers=1, synchronous=settings.db_synchronous) as db:
        return await action(KeyRepository(db, key_minter(create_password_hasher(settings.argon2_profile))))


def _format_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _non_negative_int(text: str) -> int:
    return _bounded_int(text, 0)


def _positive_int(text: str) -> int:
    return _bounded_int(text, 1)


def _bounded_int(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be at least {low}")
    return value


def _model_list(text: str) -> list[str]:
    models = [name.strip() for name in text.split(",") if name.strip()]
    if not models:
        raise argparse.ArgumentTypeError("give at least one model name")
    return models


if __name__ == "__main__":
    sys.exit(main())
