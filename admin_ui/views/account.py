"""The signed-in user's own account: change the password, enrol or remove TOTP.

TOTP enrolment: a fresh secret is kept in the (encrypted) session until the user proves with a
code that the authenticator has it and with the current password that they own the account
(``admin_ui.reauth``); only then is it stored, with ten recovery codes that are shown once and
stored as argon2id hashes. The QR code is an ``<img>`` of an SVG data URI (with its namespace,
without which a browser draws nothing).

Every form here answers with a redirect (post/redirect/get, ``admin_ui.flash``): a refusal comes
back once beside the field at fault, and the recovery codes ride in the session to the account page,
shown that once, so a reload neither re-submits a password nor shows the codes again.
"""

from __future__ import annotations

import asyncio
import secrets

import aiohttp_jinja2
import pyotp
import segno
from aiohttp import web
from aiohttp_session import get_session

from admin_ui.appkeys import db_key, hasher_key, principal_key
from admin_ui.audited import actor_of
from admin_ui.flash import done, failed
from admin_ui.passwords import checked_password, hash_password
from admin_ui.reauth import confirm_password
from admin_ui.session import start_session
from admin_ui.totp import matching_step
from proxy.auth.apikey import hash_secret
from proxy.storage.errors import ValidationError
from proxy.storage.users import User, UserRepository

routes = web.RouteTableDef()
HERE, ENROL = "/admin/account", "/admin/account/totp"
RECOVERY_CODES = 10
ISSUER = "llmserver"


async def _me(request: web.Request) -> User:
    principal = request[principal_key]
    user = None if principal.user_id is None else await UserRepository(request.app[db_key]).get_user(principal.user_id)
    if user is None:
        raise web.HTTPForbidden(text="this page is for a signed-in user")
    return user


async def _page(request: web.Request, **extra: object) -> web.Response:
    user = await _me(request)
    context = {"user": user, "enrol": None, **extra}
    return aiohttp_jinja2.render_template("account.html", request, context)


@routes.get("/account")
async def account_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/account/password")
async def change_password(request: web.Request) -> web.Response:
    user = await _me(request)
    form = await request.post()
    refused = await confirm_password(request, user, form.get("current"), "password")
    if refused is not None:
        raise await failed(request, HERE, refused, "current", form, which="password")
    try:
        new = await checked_password(str(form.get("new", "")), str(form.get("again", "")))
    except ValidationError as exc:
        raise await failed(request, HERE, str(exc), exc.field or "new", form, which="password") from None
    after = await UserRepository(request.app[db_key]).set_password(
        user.id, await hash_password(new, request.app[hasher_key]), by=actor_of(request)
    )
    await start_session(request, after)  # every other session of the account has ended; this one goes on
    raise await done(request, HERE, "Password changed. Every other session of this account has ended.")


@routes.get("/account/totp")
async def totp_enrol_page(request: web.Request) -> web.Response:
    return await _page(request, enrol=await _enrolment(request))


async def _enrolment(request: web.Request) -> dict[str, str]:
    """The pending secret (a new one the first time), its URI and its QR code."""
    user = await _me(request)
    session = await get_session(request)
    secret = session.get("totp_pending")
    if not isinstance(secret, str):
        secret = pyotp.random_base32()
        session["totp_pending"] = secret
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)
    qr = segno.make(uri, error="m").svg_data_uri(scale=4)  # with xmlns: an <img> needs it
    return {"secret": secret, "uri": uri, "qr": qr}


@routes.post("/account/totp")
async def totp_enrol(request: web.Request) -> web.Response:
    """Turn TOTP on; a refusal goes back to the enrolment page, which keeps the same secret."""
    user = await _me(request)
    session = await get_session(request)
    secret = session.get("totp_pending")
    form = await request.post()
    refused = await confirm_password(request, user, form.get("current"), "totp")
    if refused is not None:
        raise await failed(request, ENROL, refused, "current", form, which="totp")
    code = "".join(str(form.get("code", "")).split())
    step = matching_step(secret, code) if isinstance(secret, str) else None
    if step is None:
        raise await failed(request, ENROL, "That code does not match; try the next one.", "code", form, which="totp")
    codes = [secrets.token_hex(5) for _ in range(RECOVERY_CODES)]
    hasher = request.app[hasher_key]
    hashes = await asyncio.gather(*(asyncio.to_thread(hash_secret, c, hasher) for c in codes))
    await UserRepository(request.app[db_key]).set_totp(
        user.id, secret, list(hashes), used_step=step, by=actor_of(request)
    )
    del session["totp_pending"]
    raise await done(request, HERE, "Two-factor login is on. Store these recovery codes now.", codes=codes)


@routes.post("/account/totp/disable")
async def totp_disable(request: web.Request) -> web.Response:
    user = await _me(request)
    form = await request.post()
    refused = await confirm_password(request, user, form.get("current"), "totp")
    if refused is not None:
        raise await failed(request, HERE, refused, "current", form, which="totp-off")
    await UserRepository(request.app[db_key]).set_totp(user.id, None, [], by=actor_of(request))
    raise await done(request, HERE, "Two-factor login is off.")
