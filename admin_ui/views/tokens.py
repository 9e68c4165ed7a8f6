"""Admin API tokens (admin only): list, create (shown once, after the redirect), revoke (after a
confirmation)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key
from admin_ui.audited import audit
from admin_ui.confirm import confirm_page, confirmed, when
from admin_ui.flash import done, failed
from admin_ui.security import require_admin
from proxy.storage.admin_tokens import AdminToken, AdminTokenRepository
from proxy.storage.errors import ValidationError

routes = web.RouteTableDef()
HERE = "/admin/tokens"


@routes.get("/tokens")
async def tokens_page(request: web.Request) -> web.Response:
    require_admin(request)
    tokens = await AdminTokenRepository(request.app[db_key]).list()
    return aiohttp_jinja2.render_template("tokens.html", request, {"tokens": tokens})


@routes.post("/tokens")
async def create_token(request: web.Request) -> web.Response:
    principal = require_admin(request)
    form = await request.post()
    try:
        full, token = await AdminTokenRepository(request.app[db_key]).create(
            str(form.get("name", "")), str(form.get("scope", "viewer")), principal.name
        )
    except ValidationError as exc:
        raise await failed(request, HERE + "#create-token", str(exc), exc.field, form) from None
    await audit(request, "admin_token.create", f"token {token.id}", after=token.public())
    raise await done(request, HERE, f"token {token.name!r} created", full_token=full)


async def _token(request: web.Request) -> AdminToken:
    token_id = int(request.match_info["token_id"])
    found = [t for t in await AdminTokenRepository(request.app[db_key]).list() if t.id == token_id]
    if not found:
        raise web.HTTPNotFound(text="no such token")
    return found[0]


@routes.get(r"/tokens/{token_id:\d{1,15}}/revoke")
async def confirm_revoke(request: web.Request) -> web.Response:
    require_admin(request)
    token = await _token(request)
    said = [
        f"Every script that sends it is refused (401) at once; it was last used: {when(token.last_used_at)}.",
        "A revoked token cannot be restored: scripts need a new one.",
    ]
    return confirm_page(
        request,
        title=f"Revoke the admin API token “{token.name}” ({token.scope})",
        summary=f"Created by {token.created_by}.",
        consequences=said,
        button="Revoke the token",
        cancel=HERE,
    )


@routes.post(r"/tokens/{token_id:\d{1,15}}/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    require_admin(request)
    token_id = int(request.match_info["token_id"])
    if not confirmed(await request.post()):
        raise web.HTTPSeeOther(f"{HERE}/{token_id}/revoke")
    token = await AdminTokenRepository(request.app[db_key]).revoke(token_id)
    if token is None:
        raise web.HTTPNotFound(text="no such token")
    await audit(request, "admin_token.revoke", f"token {token.id}", after=token.public())
    raise await done(request, HERE, f"token {token.name!r} revoked")
