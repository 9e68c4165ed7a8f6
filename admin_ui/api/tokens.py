"""``/admin/api/tokens`` (admins only): list, create (the full token is in the answer once; only a
signed-in session can, after its password) and revoke admin API tokens (``admin_ui.actions``)."""

from __future__ import annotations

from aiohttp import web

from admin_ui.actions import make_token, revoke_token
from admin_ui.api.common import NULL, TEXT, Auth, guard, install_auth, read_body
from admin_ui.appkeys import db_key
from proxy.storage.admin_tokens import AdminTokenRepository

CREATE = {"name": TEXT, "scope": TEXT, "expires_in_days": (int, NULL), "current_password": TEXT}


def setup_token_routes(app: web.Application, *, auth: Auth, prefix: str = "/admin/api") -> None:
    """Add the routes under ``prefix`` (``/api`` in a sub-application mounted at ``/admin``)."""
    install_auth(app, auth)
    app.router.add_get(f"{prefix}/tokens", list_tokens)
    app.router.add_post(f"{prefix}/tokens", create_token)
    app.router.add_post(prefix + r"/tokens/{token_id:\d{1,15}}/revoke", revoke)


async def list_tokens(request: web.Request) -> web.Response:
    await guard(request, admin_only=True)
    tokens = await AdminTokenRepository(request.app[db_key]).list()
    return web.json_response({"tokens": [t.public() for t in tokens]})


async def create_token(request: web.Request) -> web.Response:
    await guard(request, admin_only=True)
    full, token = await make_token(request, await read_body(request, CREATE))
    return web.json_response({"token": token.public(), "full_token": full}, status=201)


async def revoke(request: web.Request) -> web.Response:
    await guard(request, admin_only=True)
    return web.json_response({"token": (await revoke_token(request)).public()})
