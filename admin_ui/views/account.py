"""The signed-in user's own account: change the password, enrol or remove TOTP.

TOTP enrolment: a fresh secret is kept in the (encrypted) session until the user proves with a
code that the authenticator has it; only then is it stored, with ten recovery codes that are
shown once and stored as argon2id hashes.
"""

from __future__ import annotations

import asyncio
import base64
import secrets

import aiohttp_jinja2
import pyotp
import segno
from aiohttp import web
from aiohttp_session import get_session

from admin_ui.appkeys import db_key, hasher_key, principal_key
from admin_ui.audited import audit
from admin_ui.passwords import check_password, hash_password, password_matches
from admin_ui.session import start_session
from admin_ui.totp import matching_step
from proxy.auth.apikey import hash_secret
from proxy.storage.errors import ValidationError
from proxy.storage.users import User, UserRepository

routes = web.RouteTableDef()
RECOVERY_CODES = 10
ISSUER = "llmserver"


async def _me(request: web.Request) -> User:
    principal = request[principal_key]
    user = None if principal.user_id is None else await UserRepository(request.app[db_key]).get_user(principal.user_id)
    if user is None:
        raise web.HTTPForbidden(text="this page is for a signed-in user")
    return user


async def _page(request: web.Request, status: int = 200, **extra: object) -> web.Response:
    user = await _me(request)
    context = {"user": user, "error": None, "message": None, "enrol": None, "codes": None, **extra}
    return aiohttp_jinja2.render_template("account.html", request, context, status=status)


@routes.get("/account")
async def account_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/account/password")
async def change_password(request: web.Request) -> web.Response:
    user = await _me(request)
    form = await request.post()
    if not await password_matches(user.password_hash, str(form.get("current", ""))):
        return await _page(request, 400, error="The current password is wrong.")
    try:
        new = check_password(str(form.get("new", "")), str(form.get("again", "")))
    except ValidationError as exc:
        return await _page(request, 400, error=str(exc))
    after = await UserRepository(request.app[db_key]).set_password(
        user.id, await hash_password(new, request.app[hasher_key])
    )
    await audit(request, "user.password", f"user {user.username}")
    await start_session(request, after)  # every other session of the account has ended; this one goes on
    return await _page(request, message="Password changed. Every other session of this account has ended.")


@routes.get("/account/totp")
async def totp_enrol_page(request: web.Request) -> web.Response:
    user = await _me(request)
    session = await get_session(request)
    secret = session.get("totp_pending")
    if not isinstance(secret, str):
        secret = pyotp.random_base32()
        session["totp_pending"] = secret
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)
    svg = segno.make(uri, error="m").svg_inline(scale=4)
    qr = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
    return await _page(request, enrol={"secret": secret, "uri": uri, "qr": qr})


@routes.post("/account/totp")
async def totp_enrol(request: web.Request) -> web.Response:
    user = await _me(request)
    session = await get_session(request)
    secret = session.get("totp_pending")
    code = "".join(str((await request.post()).get("code", "")).split())
    step = matching_step(secret, code) if isinstance(secret, str) else None
    if step is None:
        return await _page(request, 400, error="That code does not match; try the next one.")
    codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
    hasher = request.app[hasher_key]
    hashes = await asyncio.gather(*(asyncio.to_thread(hash_secret, c, hasher) for c in codes))
    await UserRepository(request.app[db_key]).set_totp(user.id, secret, list(hashes), used_step=step)
    del session["totp_pending"]
    await audit(request, "user.totp.enable", f"user {user.username}")
    return await _page(request, codes=codes, message="Two-factor login is on. Store these recovery codes now.")


@routes.post("/account/totp/disable")
async def totp_disable(request: web.Request) -> web.Response:
    user = await _me(request)
    if not await password_matches(user.password_hash, str((await request.post()).get("current", ""))):
        return await _page(request, 400, error="The current password is wrong.")
    await UserRepository(request.app[db_key]).set_totp(user.id, None, [])
    await audit(request, "user.totp.disable", f"user {user.username}")
    return await _page(request, message="Two-factor login is off.")
