"""``llmserver backup FILE``: a consistent copy of the database, safe to take while the proxy serves.

The copy comes from SQLite's online backup API (:func:`proxy.storage.backup.backup_database`): it
holds every transaction committed before the backup began, is one self-contained file of mode 0600,
and passed ``integrity_check`` before it was given its name. Restore it with ``llmserver restore``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llmserver.envfile import add_env_file_option, load_env_file
from proxy.settings import load_settings
from proxy.storage.backup import backup_database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "backup",
        help="copy the database to FILE (consistent while the proxy runs)",
        description="Copy the database of LLMSERVER_DATABASE_URL to FILE with SQLite's online backup API. "
        "Safe while the proxy serves requests; FILE must not exist yet and is created with mode 0600.",
    )
    p.add_argument("file", metavar="FILE", type=Path, help="the new backup file")
    add_env_file_option(p)
    p.set_defaults(func=run_backup)


def run_backup(args: argparse.Namespace) -> int:
    load_env_file(args.env_file)
    source = load_settings().database_path
    target = args.file.expanduser().absolute()
    started = time.perf_counter()
    size = backup_database(source, target)
    elapsed = time.perf_counter() - started
    sys.stdout.write(f"backed up {source} to {target} ({size / 1024:.0f} KiB in {elapsed:.2f} s)\n")
    return 0
