"""``/admin/api/hf-tokens``: add, list, delete and choose the default Hugging Face token.

A token goes in once (``POST {"label", "token", "default"?}``) and never comes out: every answer
holds the label and the last four characters only. Admins only, for reading too, as the Hugging Face
tokens page (``guard(request, admin_only=True)``).
"""

from __future__ import annotations

from aiohttp import web

from admin_ui.api.common import FLAG, TEXT, Auth, error, guard, install_auth, read_body, translate
from admin_ui.appkeys import lifecycle_key
from proxy.lifecycle.service import Lifecycle
from proxy.storage.errors import StorageError
from proxy.storage.hf_tokens import TokenStore

ADD = {"label": TEXT, "token": TEXT, "default": FLAG}


def setup_hf_token_routes(
    app: web.Application, lifecycle: Lifecycle, *, auth: Auth, prefix: str = "/admin/api"
) -> None:
    """Add the routes under ``prefix`` (``/api`` in a sub-application mounted at ``/admin``)."""
    app[lifecycle_key] = lifecycle
    install_auth(app, auth)
    base = f"{prefix}/hf-tokens"
    app.router.add_get(base, list_tokens)
    app.router.add_post(base, add_token)
    app.router.add_delete(base + "/{id}", delete_token)
    app.router.add_post(base + "/{id}/default", make_default)


def _store(request: web.Request) -> TokenStore:
    return request.app[lifecycle_key].registry.tokens


def _id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 15):
        raise error(400, "a token id is a number", "invalid_request", "id")
    return int(text)


async def list_tokens(request: web.Request) -> web.Response:
    await guard(request, admin_only=True)
    tokens = await _store(request).list()
    return web.json_response({"tokens": [t.to_json() for t in tokens]})


async def add_token(request: web.Request) -> web.Response:
    by = await guard(request, admin_only=True)
    body = await read_body(request, ADD, required=("label", "token"))
    try:
        stored = await _store(request).add(
            body.get("label"), body.get("token"), default=bool(body.get("default")), by=by
        )
    except StorageError as exc:
        raise translate(exc) from None
    return web.json_response(stored.to_json(), status=201)


async def delete_token(request: web.Request) -> web.Response:
    by = await guard(request, admin_only=True)
    token_id = _id(request)
    try:
        await request.app[lifecycle_key].registry.delete_token(token_id, by=by)
    except StorageError as exc:
        raise translate(exc) from None
    return web.Response(status=204)


async def make_default(request: web.Request) -> web.Response:
    by = await guard(request, admin_only=True)
    try:
        stored = await _store(request).set_default(_id(request), by=by)
    except StorageError as exc:
        raise translate(exc) from None
    return web.json_response(stored.to_json())
