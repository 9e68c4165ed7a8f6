"""Who runs a command, as the audit log names it: ``cli:<unix user>``, from ``cli`` (issue 20).

Every command that changes something passes :func:`cli_actor` down (``by=``) to the storage or
registry method that makes the change, which writes the audit row in the change's own transaction.
"""

from __future__ import annotations

import getpass
import os

from proxy.storage.audit import Actor

SOURCE = "cli"
UP = Actor("llmserver up", SOURCE)  # the first admin account and the first key that ``llmserver up`` makes


def cli_actor() -> Actor:
    """The unix user running this process (its uid when it has no name)."""
    try:
        name = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        name = f"cli:uid {os.getuid()}"
    return Actor(name, SOURCE)
