"""What every admin API handler shares: one auth dependency, one error envelope, one body reader.

A handler reads as auth -> parse -> call -> respond, the same in every module of ``admin_ui.api``:

- **auth**: ``await guard(request)`` (``admin_only=True`` where even reading is for admins). The
  dependency is the ``auth=`` callable that ``setup_*_routes`` installs (the console's session + CSRF
  or admin-API-token check, ``admin_ui.app.api_auth``); it raises an HTTP error for a request that may
  not act, else answers who acts. That :class:`~proxy.storage.audit.Actor` goes down with every change
  (``by=``), whose audit row is written in the change's own transaction (issue 20).
- **errors**: ``{"error": {"status", "message", "type", "field"?}}`` (``admin_ui.envelope``), raised
  here with :func:`error`, or by the middleware for the storage errors a handler lets through.
- **body**: :func:`read_body` with the fields a route takes and the JSON types each may hold: at most
  :data:`MAX_BODY` bytes (413), nested at most :data:`MAX_DEPTH` deep, an object whose every field is
  known and of its type, or a 400 naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from admin_ui.envelope import envelope_text
from proxy.jsontext import SURROGATE, lone_surrogate, too_deep
from proxy.lifecycle.errors import DownloadError, LifecycleError, ModelStateError
from proxy.lifecycle.trial import TrialError
from proxy.storage.audit import Actor
from proxy.storage.errors import ModelNotFoundError, StorageError, TokenNotFoundError, ValidationError, VaultError

Auth = Callable[[web.Request, bool], Awaitable[Actor]]
"""``auth(request, admin_only)``: who acts, or an HTTP error (401, 403) in the envelope."""
Spec = Mapping[str, tuple[type, ...]]
"""A body's fields and the Python types of the JSON values each may hold (``type(None)``: null)."""

auth_key: web.AppKey[Auth] = web.AppKey("admin_api_auth")

MAX_BODY = 64 * 1024
MAX_DEPTH = 8
NULL = type(None)
TEXT, FLAG, WHOLE, NUMBER = (str,), (bool,), (int,), (int, float)
_JSON_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}
_JSON_NAMES |= {list: "an array", dict: "an object", NULL: "null"}


def error(status: int, message: str, kind: str | None = None, field: str | None = None) -> web.HTTPException:
    """The JSON error (``admin_ui.envelope``); ``field`` names the parameter or body field at fault."""
    exc = web.HTTPException(text=envelope_text(status, message, kind, field), content_type="application/json")
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
        (TrialError, 502, "test_failed"),
        (VaultError, 503, "vault_unavailable"),
        (LifecycleError, 500, "lifecycle_error"),
        (StorageError, 500, "storage_error"),
    )
    for cls, status, kind in table:
        if isinstance(exc, cls):
            return error(status, str(exc), kind, getattr(exc, "field", None))
    raise exc


def install_auth(app: web.Application, auth: Auth) -> None:
    """The app's auth dependency (the first ``setup_*_routes`` call sets it; the console passes one)."""
    if auth_key not in app:
        app[auth_key] = auth


async def guard(request: web.Request, *, admin_only: bool = False) -> Actor:
    """Who acts (the ``auth`` dependency's answer); an HTTP error if nobody may."""
    return await request.app[auth_key](request, admin_only)


async def read_body(request: web.Request, spec: Spec, required: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON object of the request, checked against ``spec`` (see the module's docstring)."""
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise error(413, f"the body is larger than {MAX_BODY // 1024} KiB")
    if too_deep(raw, MAX_DEPTH):
        raise error(400, f"the body is nested deeper than {MAX_DEPTH} levels")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        raise error(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise error(400, "the body must be a JSON object")
    if lone_surrogate(raw, body):
        raise error(400, SURROGATE)
    for name, value in body.items():
        _check_field(spec, name, value)
    missing = [name for name in required if name not in body]
    if missing:
        raise error(400, f"{missing[0]!r} is required", field=missing[0])
    return body


def _check_field(spec: Spec, name: str, value: Any) -> None:
    types = spec.get(name)
    if types is None:
        known = ", ".join(spec)
        raise error(400, f"unknown field {name[:40]!r}; known: {known}", field=name[:40])
    if not any(_is(value, t) for t in types):
        expected = " or ".join(_JSON_NAMES.get(t, t.__name__) for t in types)
        raise error(400, f"{name!r} must be {expected}", field=name)


def _is(value: Any, kind: type) -> bool:
    """JSON's types: a boolean is not a number, an integer is a number."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
