"""One logging setup for every command."""

from __future__ import annotations

import logging

from proxy.settings import Settings


def setup_logging(settings: Settings) -> None:
    """Configure the root logger at the configured level (for the command-line entry points)."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "DEBUG":
        logging.getLogger("yoyo").setLevel(logging.WARNING)
