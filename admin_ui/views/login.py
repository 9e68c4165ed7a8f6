"""Login (password, then TOTP when the account has it) and logout.

Every password and recovery code is checked through the console's own argon2 gate
(:class:`~proxy.auth.gate.Argon2Gate`, threads of its own, so a login flood never delays API keys):
at most two attempts in flight per client address and per account name, one at a time per address,
beyond that a 429 page at once, before any argon2. Both steps are also throttled per account name and
per client address (``LoginThrottle``, in the database), checked once the attempt holds its place:
the same checks and the same answers whether or not the account exists. An unknown name costs no
argon2 (the gate makes its refusal take as long as a real check), so neither timing nor wording tells
names apart. A good login clears its own account's failures only (issue 19): the address's count is
not an attacker's to reset by logging into an account of their own.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session, new_session

from admin_ui.appkeys import client_addr_key, db_key, login_gate_key, principal_key
from admin_ui.audited import actor_of, audit_event
from admin_ui.session import start_session
from admin_ui.totp import matching_step
from proxy.errors import ThrottledError, VerifierBusyError
from proxy.storage.users import LoginThrottle, User, UserRepository

routes = web.RouteTableDef()
TOTP_STEP_SECONDS = 300  # how long the second step may wait after the password
WRONG = "Wrong user name, password or code."
BUSY = "Too many login attempts at once from your address or for this account. Try again in a few seconds."


def safe_next(value: str | None) -> str:
    """Only a path inside the console (no open redirect)."""
    if value and value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/"


def _subjects(request: web.Request, name: str) -> list[str]:
    return [f"user:{name.lower()}", f"addr:{request[client_addr_key]}"]


BUSY_RETRY_AFTER = 2  # seconds: the gate frees a place as soon as an attempt in flight ends


class _Refused(Exception):
    """The gate had no room for this attempt (a 429 or 503 page)."""

    def __init__(self, status: int) -> None:
        self.status = status


@asynccontextmanager
async def _gated(request: web.Request, name: str) -> AsyncIterator[str]:
    """A place in the login gate for the client's address and for the account ``name`` (its bucket)."""
    gate = request.app[login_gate_key]
    try:
        async with gate.admitted(f"account:{name.lower()}"), gate.admitted(request[client_addr_key]) as bucket:
            yield bucket
    except ThrottledError:
        raise _Refused(429) from None
    except VerifierBusyError:
        raise _Refused(503) from None


async def _throttled(request: web.Request, subjects: list[str], template: str) -> web.Response | None:
    wait = await LoginThrottle(request.app[db_key]).wait_time(subjects)
    if wait <= 0:
        return None
    error = f"Too many failed attempts. Try again in {math.ceil(wait)} seconds."
    response = _page(request, template, error, 429)
    response.headers["Retry-After"] = str(math.ceil(wait))
    return response


def _page(
    request: web.Request, template: str, error: str | None, status: int = 200, username: str = ""
) -> web.Response:
    """A login page; a refused one keeps the user name that was typed (never the password)."""
    context = {"error": error, "next": safe_next(request.query.get("next")), "username": username}
    return aiohttp_jinja2.render_template(template, request, context, status=status)


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    await get_session(request)  # the anonymous session holds the login form's CSRF token
    return _page(request, "login.html", None)


@routes.post("/login")
async def login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    name, password = str(form.get("username", "")).strip()[:64], str(form.get("password", ""))
    try:
        async with _gated(request, name) as bucket:
            return await _password_step(request, bucket, name, password, safe_next(str(form.get("next", ""))))
    except _Refused as refused:
        response = _page(request, "login.html", BUSY, refused.status, name)
        response.headers["Retry-After"] = str(BUSY_RETRY_AFTER)
        return response


async def _password_step(request: web.Request, bucket: str, name: str, password: str, nxt: str) -> web.Response:
    subjects = _subjects(request, name)
    refused = await _throttled(request, subjects, "login.html")
    if refused is not None:
        return refused
    user = await UserRepository(request.app[db_key]).get_user(name) if name else None
    ok = await request.app[login_gate_key].check(bucket, user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        await LoginThrottle(request.app[db_key]).failed(subjects)
        await audit_event(request, "login.failed", target=name or None, actor=name or "anonymous")
        return _page(request, "login.html", WRONG, 401, name)
    if user.totp_enabled:
        return await _second_step(request, user, nxt)
    await LoginThrottle(request.app[db_key]).succeeded(subjects[:1])  # its own account's failures only
    return await _logged_in(request, user, nxt, "login")


async def _second_step(request: web.Request, user: User, nxt: str) -> web.Response:
    (await get_session(request)).invalidate()
    session = await new_session(request)
    session.update({"pending_uid": user.id, "pending_at": time.time(), "next": nxt, "csrf": secrets.token_urlsafe(32)})
    raise web.HTTPSeeOther("/admin/login/totp")


async def _logged_in(request: web.Request, user: User, nxt: str, how: str) -> web.Response:
    await start_session(request, user)
    await audit_event(request, "login", target=user.username, actor=user.username, after={"method": how})
    raise web.HTTPSeeOther(nxt)


async def _pending_user(request: web.Request) -> User | None:
    session = await get_session(request)
    uid, at = session.get("pending_uid"), session.get("pending_at")
    if not isinstance(uid, int) or not isinstance(at, (int, float)) or time.time() - at > TOTP_STEP_SECONDS:
        return None
    user = await UserRepository(request.app[db_key]).get_user(uid)
    return None if user is None or user.disabled or not user.totp_enabled else user


@routes.get("/login/totp")
async def totp_page(request: web.Request) -> web.Response:
    if await _pending_user(request) is None:
        raise web.HTTPSeeOther("/admin/login")
    return _page(request, "login_totp.html", None)


@routes.post("/login/totp")
async def totp_submit(request: web.Request) -> web.Response:
    user = await _pending_user(request)
    if user is None:
        raise web.HTTPSeeOther("/admin/login")
    code = "".join(str((await request.post()).get("code", "")).split())[:32]
    try:
        async with _gated(request, user.username) as bucket:
            return await _code_step(request, bucket, user, code)
    except _Refused as refused:
        return _page(request, "login_totp.html", BUSY, refused.status)


async def _code_step(request: web.Request, bucket: str, user: User, code: str) -> web.Response:
    subjects = _subjects(request, user.username)
    refused = await _throttled(request, subjects, "login_totp.html")
    if refused is not None:
        return refused
    how = await _check_code(request, bucket, user, code)
    if how is None:
        await LoginThrottle(request.app[db_key]).failed(subjects)
        await audit_event(request, "login.failed", target=user.username, actor=user.username, after={"step": "totp"})
        return _page(request, "login_totp.html", WRONG, 401)
    await LoginThrottle(request.app[db_key]).succeeded(subjects[:1])  # its own account's failures only
    nxt = safe_next(str((await get_session(request)).get("next", "")))
    return await _logged_in(request, user, nxt, how)


async def _check_code(request: web.Request, bucket: str, user: User, code: str) -> str | None:
    """``"totp"`` or ``"recovery code"`` when ``code`` is good, else None."""
    assert user.totp_secret is not None
    repo = UserRepository(request.app[db_key])
    step = matching_step(user.totp_secret, code)
    if step is not None:
        return "totp" if await repo.use_totp_step(user.id, step) else None  # a code is good once
    for code_id, code_hash in await repo.recovery_hashes(user.id):
        if await request.app[login_gate_key].check(bucket, code_hash, code.lower()):
            return "recovery code" if await repo.use_recovery_code(code_id) else None
    return None


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    principal = request[principal_key]
    if principal.user_id is not None:
        await UserRepository(request.app[db_key]).end_sessions(principal.user_id, by=actor_of(request))
    (await get_session(request)).invalidate()
    raise web.HTTPSeeOther("/admin/login")
