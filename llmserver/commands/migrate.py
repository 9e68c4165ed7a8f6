"""``llmserver migrate``: apply the database migrations this version ships, or show the pending ones.

The proxy applies pending migrations by itself at start-up; this command is for doing it
beforehand (after an upgrade, before the service starts) and for seeing what an upgrade will do
(``--show``, which opens the file read-only and never creates it).
"""

from __future__ import annotations

import argparse
import sys

from llmserver.envfile import add_env_file_option, load_env_file
from proxy.settings import load_settings
from proxy.storage.migrate import apply_migrations, pending_migrations


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending database migrations (or --show them)",
        description="Apply the pending migrations to the database of LLMSERVER_DATABASE_URL.",
    )
    p.add_argument("--show", action="store_true", help="list the pending migrations; change nothing")
    add_env_file_option(p)
    p.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    load_env_file(args.env_file)
    path = load_settings().database_path
    if args.show:
        pending = pending_migrations(path)
        if not pending:
            sys.stdout.write(f"{path}: up to date\n")
        else:
            sys.stdout.write(f"{path}: {len(pending)} pending migration(s):\n")
            sys.stdout.write("".join(f"  {m}\n" for m in pending))
        return 0
    applied = apply_migrations(path)
    if applied:
        sys.stdout.write(f"{path}: applied {', '.join(applied)}\n")
    else:
        sys.stdout.write(f"{path}: up to date, nothing to apply\n")
    return 0
