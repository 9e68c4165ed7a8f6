"""Admin API tokens (admin only): list, create (shown once, after the redirect), revoke (after a
confirmation); on a page here, in the JSON API in ``admin_ui.api.tokens`` (``admin_ui.actions``).

A token belongs to the account that makes it and acts with that account's current role, narrowed
by its scope (``proxy.storage.admin_tokens``). Making one asks for the current password
(``admin_ui.reauth``), so only a signed-in session can: a token cannot make tokens, which would
let a leaked one outlive its revocation or expiry. Listing and revoking work with a token too.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.actions import make_token
from admin_ui.actions import revoke_token as revoke
from admin_ui.appkeys import db_key
from admin_ui.confirm import confirm_page, confirmed, when
from admin_ui.flash import done, failed
from admin_ui.security import require_admin
from proxy.storage.admin_tokens import AdminToken, AdminTokenRepository
from proxy.storage.errors import ValidationError

routes = web.RouteTableDef()
EXPIRY_CHOICES = (1, 7, 30, 90, 365)  # days, on the page; the API takes any from 1 to MAX_DAYS
HERE = "/admin/tokens"
FORM_FIELDS = {"current_password": "current"}  # the API's field names that the page's form spells otherwise


@routes.get("/tokens")
async def tokens_page(request: web.Request) -> web.Response:
    require_admin(request)
    tokens = await AdminTokenRepository(request.app[db_key]).list()
    context = {"tokens": tokens, "expiry_choices": EXPIRY_CHOICES}
    return aiohttp_jinja2.render_template("tokens.html", request, context)


@routes.post("/tokens")
async def create_token(request: web.Request) -> web.Response:
    form = await request.post()
    days = str(form.get("expires_in_days", "")).strip()
    fields = {"name": form.get("name"), "scope": form.get("scope", "viewer"), "current_password": form.get("current")}
    try:
        full, token = await make_token(
            request, {**fields, "expires_in_days": int(days) if days.isdigit() else days or None}
        )
    except ValidationError as exc:
        field = FORM_FIELDS.get(exc.field or "", exc.field)
        raise await failed(request, HERE + "#create-token", str(exc), field, form) from None
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
    token = await revoke(request)
    raise await done(request, HERE, f"token {token.name!r} revoked")
