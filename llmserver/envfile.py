"""``--env-file PATH``: read settings from the services' environment file, as systemd does.

The operator's commands (``doctor``, ``migrate``, ``backup``, ``restore``) run in a shell, not under
the unit, so they do not see its ``EnvironmentFile=``. Given ``--env-file
/etc/llmserver/llmserver.env`` they read it the way systemd does for these simple files:
``NAME=VALUE`` lines, ``#`` comments and blank lines skipped, one pair of surrounding quotes
removed. Variables already set in the environment win, as they would on the command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_env_file_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="read settings from this file first (e.g. /etc/llmserver/llmserver.env, as the units do)",
    )


def load_env_file(path: Path | None) -> None:
    """Set the variables of ``path`` that are not set yet; nothing when ``path`` is None."""
    if path is None:
        return
    for name, value in read_env_file(path).items():
        os.environ.setdefault(name, value)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values
