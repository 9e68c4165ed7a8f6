"""How a request is named wherever it is recorded (the ledger, the access line, the response headers).

The middleware gives every request its ids before any handler runs; every front passes them on to
the metering owner, which writes them into the request's usage row and access line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestIds:
    """The server's own request id (the ledger's identity) and the client's, kept beside it."""

    server: str
    client: str | None = None
