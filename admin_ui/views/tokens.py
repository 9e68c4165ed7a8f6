"""Admin API tokens (admin only): list, create (shown once, after the redirect), revoke (after a
confirmation); on a page and in the JSON API.

A token belongs to the account that makes it and acts with that account's current role, narrowed
by its scope (``proxy.storage.admin_tokens``). Making one asks for the current password
(``admin_ui.reauth``), so only a signed-in session can: a token cannot make tokens, which would
let a leaked one outlive its revocation or expiry. Listing and revoking work with a token too.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.api.common import json_body
from admin_ui.appkeys import Principal, db_key
from admin_ui.audited import actor_of
from admin_ui.confirm import confirm_page, confirmed, when
from admin_ui.flash import done, failed
from admin_ui.reauth import confirm_password
from admin_ui.security import require_admin
from proxy.storage.admin_tokens import AdminToken, AdminTokenRepository
from proxy.storage.errors import ValidationError
from proxy.storage.users import UserRepository

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


async def make_token(request: web.Request, body: dict[str, Any]) -> tuple[str, AdminToken]:
    """Create a token owned by the signed-in account, after its password; audited."""
    principal: Principal = require_admin(request)
    if principal.via != "session" or principal.user_id is None:
        raise web.HTTPForbidden(text="a token cannot make tokens: sign in to the console (it asks for the password)")
    user = await UserRepository(request.app[db_key]).get_user(principal.user_id)
    assert user is not None  # the session was validated against this row a moment ago
    refused = await confirm_password(request, user, body.get("current_password"), "admin_token.create")
    if refused is not None:
        raise ValidationError(refused, field="current_password")
    name, scope = body.get("name"), body.get("scope", "viewer")
    if not isinstance(name, str):
        raise ValidationError("the name must be a string", field="name")
    if not isinstance(scope, str):
        raise ValidationError("the scope must be a string", field="scope")
    full, token = await AdminTokenRepository(request.app[db_key]).create(
        name, scope, principal.name, user.id, body.get("expires_in_days"), by=actor_of(request)
    )
    return full, token


async def revoke(request: web.Request) -> AdminToken:
    require_admin(request)
    token_id = int(request.match_info["token_id"])
    repo = AdminTokenRepository(request.app[db_key])
    token = await repo.revoke(token_id, by=actor_of(request)) if token_id < 2**63 else None
    if token is None:
        raise web.HTTPNotFound(text=f"no admin API token {request.match_info['token_id']}")
    return token


@routes.get("/api/tokens")
async def list_tokens_json(request: web.Request) -> web.Response:
    require_admin(request)
    tokens = await AdminTokenRepository(request.app[db_key]).list()
    return web.json_response({"tokens": [t.public() for t in tokens]})


@routes.post("/api/tokens")
async def create_token_json(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = sorted(set(body) - {"name", "scope", "expires_in_days", "current_password"})
    if unknown:
        raise ValidationError(f"unknown fields: {', '.join(unknown)}", field=unknown[0])
    full, token = await make_token(request, body)
    return web.json_response({"token": token.public(), "full_token": full}, status=201)


@routes.post(r"/api/tokens/{token_id:\d{1,15}}/revoke")
async def revoke_token_json(request: web.Request) -> web.Response:
    return web.json_response({"token": (await revoke(request)).public()})
