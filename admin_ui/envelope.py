"""The console's one JSON error envelope, for every route under ``/admin/api`` and ``/admin/usage``:
``{"error": {"status", "message", "type", "field"?}}``. ``type`` is machine-readable; ``field`` names
the parameter or body field at fault. The middleware (``admin_ui.security``) and the API's own errors
(``admin_ui.api.common``) both build it here, so a client parses one shape (issue 20)."""

from __future__ import annotations

import json
from typing import Any

KINDS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    502: "upstream_error",
    503: "unavailable",
}


def envelope(status: int, message: str, kind: str | None = None, field: str | None = None) -> dict[str, Any]:
    """The error object; ``kind`` defaults to the status's (``internal_error`` for any other 5xx)."""
    fields: dict[str, Any] = {"status": status, "message": message, "type": kind or KINDS.get(status, _other(status))}
    if field is not None:
        fields["field"] = field
    return {"error": fields}


def envelope_text(status: int, message: str, kind: str | None = None, field: str | None = None) -> str:
    return json.dumps(envelope(status, message, kind, field))


def _other(status: int) -> str:
    return "internal_error" if status >= 500 else "invalid_request"
