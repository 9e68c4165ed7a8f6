"""``llmserver vault ...``: the stored Hugging Face tokens, and rotating the key that encrypts them.

``add`` reads the token from standard input (so it is in no shell history and no process list);
``list`` shows label and last four, never the token; ``rotate-key`` re-encrypts every token under a
new key in one transaction. The service still running with the old key keeps working (each token is
kept under the old key too until the service restarts with the new one). The new key is written where
the key was read from (the data directory's ``secrets.env`` after ``make run``; the credential file
of a systemd install when the user may write it) or else printed once, to put there before the next
start. The settings are the managed service's own (:mod:`llmserver.envfile`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import secrets
import sqlite3
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from llmserver.commands.actor import cli_actor
from llmserver.envfile import SECRETS_NAME, key_source
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
    stored = _run(lambda store: store.add(args.label, token, default=args.default, by=cli_actor()))
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
        await store.delete(args.id, by=cli_actor())
        settings = load_settings()
        await ModelStore(store.db, settings.model_config_dir).sync_files()  # models that named it: default now

    if _run(delete) is False:
        return EXIT_ERROR
    sys.stdout.write(f"deleted token {args.id}\n")
    return 0


def default_command(args: argparse.Namespace) -> int:
    if _run(lambda store: store.set_default(args.id, by=cli_actor())) is False:
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
    count = _run(lambda store: store.rotate(new, by=cli_actor()))
    if count is False:
        return EXIT_ERROR
    sys.stdout.write(f"re-encrypted {count} token(s) under key id {new.key_id}.\n")
    written = _write_key(key_source(), new_hex)
    if written is not None:
        sys.stdout.write(f"The new key is in {written}; the running service keeps working until it restarts.\n")
    elif not args.new_key_stdin:
        where = key_source() or "LLMSERVER_ENCRYPTION_KEY"
        sys.stdout.write(
            f"Put this new key in {where} before the service's next start (shown only this once; the running "
            f"service keeps working until then):\n{new_hex}\n"
        )
    return 0


def _write_key(path: Path | None, new_hex: str) -> Path | None:
    """Replace the key in the file it was read from (atomically, same mode); None if it cannot."""
    if path is None or not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return None
    if path.name == SECRETS_NAME:
        lines = [
            f"LLMSERVER_ENCRYPTION_KEY={new_hex}"
            if line.partition("=")[0].strip() == "LLMSERVER_ENCRYPTION_KEY"
            else line
            for line in path.read_text().splitlines()
        ]
        text = "\n".join(lines) + "\n"
    else:  # a credential file: the key alone
        text = new_hex + "\n"
    spare = path.with_name(f".{path.name}.new")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IMODE(path.stat().st_mode))
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    with contextlib.suppress(OSError):  # root rotating a credential file: keep its owner and group
        os.chown(spare, path.stat().st_uid, path.stat().st_gid)
    os.replace(spare, path)
    return path


def _run(action: Callable[[TokenStore], Awaitable[T]]) -> T | bool:
    try:
        return asyncio.run(_with_store(action))
    except (ProxyError, StorageError, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"llmserver vault: error: {exc}\n")
        return False


async def _with_store(action: Callable[[TokenStore], Awaitable[T]]) -> T:
    settings = load_settings()
    async with Database.open(settings.database_path, readers=1, synchronous=settings.db_synchronous) as db:
        return await action(TokenStore(db, settings.vault() if settings.encryption_key else None))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="llmserver")
    register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args()
    sys.exit(parsed.func(parsed))
