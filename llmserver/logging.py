"""One logging setup for every command: the level, and text or JSON lines on stderr.

Under systemd, stderr goes to the journal (``journalctl -u llmserver-proxy``), which adds its own
timestamp; ``LLMSERVER_LOG_FORMAT=json`` writes one JSON object per line instead of text, for log
shippers: ``time``, ``level``, ``logger``, ``message``, plus the structured fields a line carries
(the access log's request id, key id, model, status, tokens, latency and TTFT,
:mod:`proxy.accesslog`), and ``exception`` with the traceback when there is one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from proxy import accesslog
from proxy.lifecycle.redact import redact_urls

if TYPE_CHECKING:  # the runtime daemon logs through here too and need not import the proxy
    from proxy.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT` lines without signed URLs."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={"fields": {...}}`` become top-level keys; no signed URLs."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_urls(self._json(record))

    def _json(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(settings: Settings) -> None:
    """Configure the root logger from the proxy's settings (for the commands that serve), with the
    access log's buffered sink (:mod:`proxy.accesslog`) on the same stream and in the same format."""
    configure_logging(settings.log_level, settings.log_format)
    accesslog.use_sink(accesslog.LineSink(sys.stderr, settings.log_format))


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root logger at ``level``, lines in ``log_format`` (``text`` or ``json``) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler], force=True)
    if level != "DEBUG":
        logging.getLogger("yoyo").setLevel(logging.WARNING)
