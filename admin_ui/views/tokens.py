"""Admin API tokens (admin only): list, create (shown once), revoke."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key
from admin_ui.audited import audit
from admin_ui.security import require_admin
from proxy.storage.admin_tokens import AdminTokenRepository
from proxy.storage.errors import ValidationError

routes = web.RouteTableDef()


async def _page(request: web.Request, status: int = 200, **extra: object) -> web.Response:
    require_admin(request)
    tokens = await AdminTokenRepository(request.app[db_key]).list()
    context = {"tokens": tokens, "error": None, "full_token": None, **extra}
    return aiohttp_jinja2.render_template("tokens.html", request, context, status=status)


@routes.get("/tokens")
async def tokens_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/tokens")
async def create_token(request: web.Request) -> web.Response:
    principal = require_admin(request)
    form = await request.post()
    try:
        full, token = await AdminTokenRepository(request.app[db_key]).create(
            str(form.get("name", "")), str(form.get("scope", "viewer")), principal.name
        )
    except ValidationError as exc:
        return await _page(request, 400, error=str(exc))
    await audit(request, "admin_token.create", f"token {token.id}", after=token.public())
    return await _page(request, full_token=full)


@routes.post(r"/tokens/{token_id:\d+}/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    require_admin(request)
    token = await AdminTokenRepository(request.app[db_key]).revoke(int(request.match_info["token_id"]))
    if token is None:
        raise web.HTTPNotFound(text="no such token")
    await audit(request, "admin_token.revoke", f"token {token.id}", after=token.public())
    raise web.HTTPSeeOther("/admin/tokens")
