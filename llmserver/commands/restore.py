"""``llmserver restore FILE``: put a backup back in place of the database, with the proxy stopped.

Refuses while any process serves the database (it holds the serving lock,
:mod:`proxy.storage.servinglock`: a running proxy or ``llmserver up``), and refuses a file that
fails SQLite's integrity check, is not an llmserver database, or comes from a newer version. The
database it replaces is kept beside it as ``<name>.before-restore-<time>``. A backup from an
older version is migrated when the proxy next starts (or by ``llmserver migrate``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmserver.envfile import add_env_file_option, load_env_file
from proxy.settings import load_settings
from proxy.storage.backup import restore_database
from proxy.storage.servinglock import exclusive


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "restore",
        help="replace the database with a backup FILE (the proxy must be stopped)",
        description="Check FILE (integrity, tables, migrations) and put it in place of the database of "
        "LLMSERVER_DATABASE_URL; the current database is kept aside. Refuses while a proxy serves it.",
    )
    p.add_argument("file", metavar="FILE", type=Path, help="a file made by llmserver backup")
    add_env_file_option(p)
    p.set_defaults(func=run_restore)


def run_restore(args: argparse.Namespace) -> int:
    load_env_file(args.env_file)
    live = load_settings().database_path
    copy = args.file.expanduser().absolute()
    with exclusive(live):
        aside = restore_database(copy, live)
    sys.stdout.write(f"restored {copy} to {live}\n")
    if aside is not None:
        sys.stdout.write(f"the previous database is kept as {aside}\n")
    sys.stdout.write("start the proxy again (systemctl start llmserver-proxy); it applies pending migrations\n")
    return 0
