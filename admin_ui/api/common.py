"""What the admin API handlers share: the swappable auth check, error translation, JSON bodies.

Authentication is a dependency: ``setup_*_routes(app, ..., auth=...)`` takes an async callable that
raises ``web.HTTPException`` for a request that may not act and otherwise answers who acts (the
console passes its session + CSRF or admin-API-token check, ``admin_ui.app.api_auth``). That
:class:`~proxy.storage.audit.Actor` goes down with every change (``by=``), whose audit row is written
in the change's own transaction (issue 20). Errors are
``{"error": {"status", "message", "type", "field"?}}``, the console's envelope plus a machine-readable
type and, for a bad value, the field at fault.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from proxy.lifecycle.errors import DownloadError, LifecycleError, ModelStateError
from proxy.storage.audit import Actor
from proxy.storage.errors import ModelNotFoundError, StorageError, TokenNotFoundError, ValidationError, VaultError
from proxy.unicode_text import lone_surrogate

Auth = Callable[[web.Request], Awaitable[Actor]]

auth_key: web.AppKey[Auth] = web.AppKey("admin_api_auth")


def error(status: int, message: str, kind: str, field: str | None = None) -> web.HTTPException:
    """The JSON error; ``field`` names the parameter or body field at fault."""
    fields: dict[str, Any] = {"status": status, "message": message, "type": kind}
    if field is not None:
        fields["field"] = field
    body = json.dumps({"error": fields})
    cls = web.HTTPException
    exc = cls(text=body, content_type="application/json")
    exc.set_status(status)
    return exc


def translate(exc: Exception) -> web.HTTPException:
    """The HTTP error for a storage or lifecycle error (messages never hold a secret)."""
    table: tuple[tuple[type[Exception], int, str], ...] = (
        (ValidationError, 400, "invalid_request"),
        (ModelNotFoundError, 404, "not_found"),
        (TokenNotFoundError, 404, "not_found"),
        (ModelStateError, 409, "conflict"),
        (DownloadError, 502, "download_failed"),
        (VaultError, 503, "vault_unavailable"),
        (LifecycleError, 500, "lifecycle_error"),
        (StorageError, 500, "storage_error"),
    )
    for cls, status, kind in table:
        if isinstance(exc, cls):
            return error(status, str(exc), kind, getattr(exc, "field", None))
    raise exc


SURROGATE = "the body holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), which is not text"


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        raise error(400, "the body must be a JSON object", "invalid_request") from None
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON object", "invalid_request")
    if lone_surrogate(await request.read(), body):
        raise error(400, SURROGATE, "invalid_request")
    return body


def csv_cell(text: str) -> str:
    """Defuse spreadsheet formulas in user-supplied text (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def guard(request: web.Request) -> Actor:
    """Who acts (the ``auth`` dependency's answer); an HTTP error if nobody may."""
    return await request.app[auth_key](request)
