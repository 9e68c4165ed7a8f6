"""``/admin/api/hf-tokens``: add, list, delete and choose the default Hugging Face token.

A token goes in once (``POST {"label", "token", "default"?}``) and never comes out: every answer
holds the label and the last four characters only. These routes have their own ``auth`` check
(the console's lets admins only, for reading too, as its Hugging Face tokens page does).
"""

from __future__ import annotations

from aiohttp import web

from admin_ui.api.common import Auth, auth_key, error, json_body, translate
from proxy.lifecycle.service import Lifecycle
from proxy.storage.audit import Actor
from proxy.storage.errors import StorageError
from proxy.storage.hf_tokens import TokenStore

tokens_lifecycle_key = web.AppKey("admin_tokens_lifecycle", Lifecycle)
tokens_auth_key: web.AppKey[Auth] = web.AppKey("admin_hf_tokens_auth")


def setup_hf_token_routes(
    app: web.Application, lifecycle: Lifecycle, *, auth: Auth, prefix: str = "/admin/api"
) -> None:
    """Add the routes under ``prefix`` (``/api`` in a sub-application mounted at ``/admin``)."""
    app[tokens_lifecycle_key] = lifecycle
    app[tokens_auth_key] = auth
    if auth_key not in app:
        app[auth_key] = auth
    base = f"{prefix}/hf-tokens"
    app.router.add_get(base, list_tokens)
    app.router.add_post(base, add_token)
    app.router.add_delete(base + "/{id}", delete_token)
    app.router.add_post(base + "/{id}/default", make_default)


async def guard(request: web.Request) -> Actor:
    return await request.app[tokens_auth_key](request)


def _store(request: web.Request) -> TokenStore:
    return request.app[tokens_lifecycle_key].registry.tokens


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise error(400, "a token id is a number", "invalid_request", "id")
    return int(text)


async def list_tokens(request: web.Request) -> web.Response:
    await guard(request)
    tokens = await _store(request).list()
    return web.json_response({"tokens": [t.to_json() for t in tokens]})


async def add_token(request: web.Request) -> web.Response:
    by = await guard(request)
    body = await json_body(request)
    try:
        stored = await _store(request).add(
            body.get("label"), body.get("token"), default=bool(body.get("default")), by=by
        )
    except StorageError as exc:
        raise translate(exc) from None
    return web.json_response(stored.to_json(), status=201)


async def delete_token(request: web.Request) -> web.Response:
    by = await guard(request)
    token_id = _id(request)
    try:
        await request.app[tokens_lifecycle_key].registry.delete_token(token_id, by=by)
    except StorageError as exc:
        raise translate(exc) from None
    return web.Response(status=204)


async def make_default(request: web.Request) -> web.Response:
    by = await guard(request)
    try:
        stored = await _store(request).set_default(_id(request), by=by)
    except StorageError as exc:
        raise translate(exc) from None
    return web.json_response(stored.to_json())
