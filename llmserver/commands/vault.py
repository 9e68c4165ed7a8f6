"""``llmserver vault ...``: the stored Hugging Face tokens, and rotating the key that encrypts them.

``add`` reads the token from standard input (so it is in no shell history and no process list);
``list`` shows label and last four, never the token; ``rotate-key`` re-encrypts every token under a
new key in one transaction and prints the new key once: put it in ``LLMSERVER_ENCRYPTION_KEY``
(or the ``encryption-key`` credential) before the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.errors import ProxyError
from proxy.settings import load_settings
from proxy.storage.database import Database
from proxy.storage.errors import StorageError, VaultError
from proxy.storage.hf_tokens import HfToken, TokenStore
from proxy.storage.models import ModelStore
from proxy.storage.vault import Vault

T = TypeVar("T")
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vault = subparsers.add_parser("vault", help="stored Hugging Face tokens and their encryption key")
    commands = vault.add_subparsers(dest="vault_command", metavar="COMMAND", required=True)
    add = commands.add_parser("add", help="store a Hugging Face token (read from standard input)")
    add.add_argument("--label", required=True, help="what the token is (shown in lists)")
    add.add_argument("--default", action="store_true", help="use it for models that name no token")
    add.set_defaults(func=add_command)
    commands.add_parser("list", help="stored tokens: id, label, last four").set_defaults(func=list_command)
    rm = commands.add_parser("rm", help="delete a stored token")
    rm.add_argument("id", type=int)
    rm.set_defaults(func=rm_command)
    default = commands.add_parser("default", help="make a stored token the default")
    default.add_argument("id", type=int)
    default.set_defaults(func=default_command)
    rotate = commands.add_parser("rotate-key", help="re-encrypt every token under a new key")
    rotate.add_argument(
        "--new-key-stdin", action="store_true", help="read the new key (64 hex) from stdin instead of making one"
    )
    rotate.set_defaults(func=rotate_command)


def add_command(args: argparse.Namespace) -> int:
    token = (sys.stdin.readline() if not sys.stdin.isatty() else getpass.getpass("Hugging Face token: ")).strip()
    stored = _run(lambda store: store.add(args.label, token, default=args.default))
    if not isinstance(stored, HfToken):
        return EXIT_ERROR
    sys.stdout.write(f"stored token {stored.id} ({stored.label}, ...{stored.last_four})\n")
    return 0


def list_command(args: argparse.Namespace) -> int:
    tokens = _run(lambda store: store.list())
    if not isinstance(tokens, list):
        return EXIT_ERROR
    sys.stdout.write("ID  LABEL  LAST4  DEFAULT\n")
    for t in tokens:
        sys.stdout.write(f"{t.id}  {t.label}  {t.last_four}  {'yes' if t.is_default else ''}\n".replace("  \n", "\n"))
    return 0


def rm_command(args: argparse.Namespace) -> int:
    async def delete(store: TokenStore) -> None:
        await store.delete(args.id)
        settings = load_settings()
        await ModelStore(store.db, settings.model_config_dir).sync_files()  # models that named it: default now

    if _run(delete) is False:
        return EXIT_ERROR
    sys.stdout.write(f"deleted token {args.id}\n")
    return 0


def default_command(args: argparse.Namespace) -> int:
    if _run(lambda store: store.set_default(args.id)) is False:
        return EXIT_ERROR
    sys.stdout.write(f"token {args.id} is the default\n")
    return 0


def rotate_command(args: argparse.Namespace) -> int:
    new_hex = sys.stdin.readline().strip() if args.new_key_stdin else secrets.token_hex(32)
    try:
        new = Vault(new_hex)
    except VaultError as exc:
        sys.stderr.write(f"llmserver vault: error: the new key: {exc}\n")
        return EXIT_ERROR
    count = _run(lambda store: store.rotate(new))
    if count is False:
        return EXIT_ERROR
    sys.stdout.write(f"re-encrypted {count} token(s) under key id {new.key_id}.\n")
    if not args.new_key_stdin:
        sys.stdout.write("Set LLMSERVER_ENCRYPTION_KEY to this new key (shown only this once):\n" + new_hex + "\n")
    return 0


def _run(action: Callable[[TokenStore], Awaitable[T]]) -> T | bool:
    try:
        return asyncio.run(_with_store(action))
    except (ProxyError, StorageError, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"llmserver vault: error: {exc}\n")
        return False


async def _with_store(action: Callable[[TokenStore], Awaitable[T]]) -> T:
    settings = load_settings()
    async with Database.open(settings.database_path, readers=1, synchronous=settings.db_synchronous) as db:
        return await action(TokenStore(db, settings.vault()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="llmserver")
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed))
