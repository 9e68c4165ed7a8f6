"""``llmserver admin ...``: accounts, admin API tokens, and the console on its own address.

``create-user NAME [--role admin|viewer]`` reads the password twice from the terminal, or once
from standard input when that is not a terminal (``echo "$PW" | llmserver admin create-user x``);
never from an argument, where it would land in shell history and ``ps``. Every change is written
to the audit log as done by ``cli:<login name>``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from admin_ui.passwords import check_password, generate_password, hash_password
from llmserver.commands.actor import UP, cli_actor
from llmserver.logging import setup_logging
from llmserver.serve import ServeError, serve_admin
from proxy.auth.apikey import create_password_hasher
from proxy.errors import ProxyError
from proxy.settings import Settings, load_settings
from proxy.storage.admin_tokens import SCOPES, AdminTokenRepository
from proxy.storage.database import Database
from proxy.storage.errors import StorageError, ValidationError
from proxy.storage.users import ROLES, User, UserRepository

T = TypeVar("T")
EXIT_ERROR = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = sub.add_parser("admin", help="admin console: users, API tokens, serve")
    commands = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    create = commands.add_parser("create-user", help="create an admin console account")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, default="admin")
    create.set_defaults(func=create_user_command)
    token = commands.add_parser("create-token", help="create an admin API token (printed once)")
    token.add_argument("name", help="what the token is for")
    token.add_argument("--user", required=True, help="the account the token acts as (with its current role)")
    token.add_argument("--scope", choices=SCOPES, default="viewer")
    token.add_argument("--expires-in-days", type=int, default=None, help="unset: the token does not expire")
    token.set_defaults(func=create_token_command)
    serve = commands.add_parser("serve", help="serve the console alone on LLMSERVER_ADMIN_BIND_ADDRESS")
    serve.set_defaults(func=serve_command)


def read_password(prompt: str = "Password: ") -> str:
    """Twice from a terminal, once from a pipe; checked against the password rules."""
    if not sys.stdin.isatty():
        return check_password(sys.stdin.readline().rstrip("\n"))
    first = getpass.getpass(prompt)
    return check_password(first, getpass.getpass("Again: "))


def _run(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Database.open(settings.database_path) as db:
            return await work(db)

    return asyncio.run(main())


def create_user_command(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        password = read_password()
    except (StorageError, EOFError) as exc:
        sys.stderr.write(f"llmserver admin create-user: {exc or 'no password given'}\n")
        return EXIT_ERROR
    hashed = asyncio.run(hash_password(password, create_password_hasher(settings.argon2_profile)))

    async def create(db: Database) -> User:
        return await UserRepository(db).create_user(args.name, hashed, args.role, by=cli_actor())

    user = _run(settings, create)
    sys.stdout.write(f"created {user.role} {user.username}\n")
    return 0


def create_token_command(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def create(db: Database) -> str:
        owner = await UserRepository(db).get_user(args.user)
        if owner is None:
            raise ValidationError(f"no account named {args.user!r}")
        by = cli_actor()
        full, _ = await AdminTokenRepository(db).create(
            args.name, args.scope, by.name, owner.id, args.expires_in_days, by=by
        )
        return full

    try:
        full = _run(settings, create)
    except StorageError as exc:
        sys.stderr.write(f"llmserver admin create-token: {exc}\n")
        return EXIT_ERROR
    sys.stdout.write(f"created {args.scope} admin API token; it is shown only this once:\n{full}\n")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ProxyError as exc:
        sys.stderr.write(f"llmserver admin serve: {exc}\n")
        return EXIT_ERROR
    if settings.session_key is None:
        sys.stderr.write("llmserver admin serve: LLMSERVER_SESSION_KEY is not set (128 hex characters)\n")
        return EXIT_ERROR
    setup_logging(settings)
    try:
        serve_admin(settings)
    except ServeError as exc:
        sys.stderr.write(f"llmserver admin serve: {exc}\n")
        return 1
    return 0


async def first_admin(db: Database, hasher_profile: str) -> tuple[str, str] | None:
    """``(name, password)`` of a new admin when the database has no user at all; else None."""
    repo = UserRepository(db)
    if await repo.count_users():
        return None
    password = generate_password()
    hashed = await hash_password(password, create_password_hasher(hasher_profile))
    # printed once: the admin replaces it
    user = await repo.create_user("admin", hashed, change_required=True, by=UP)
    return user.username, password
