"""The admin app's middlewares, outermost first: headers and errors -> authentication -> CSRF.

Headers: every answer (pages, JSON, errors, static files) carries a strict Content-Security-Policy
(scripts and styles only from this origin, no inline script, no framing), ``X-Frame-Options``,
``Referrer-Policy``, ``X-Content-Type-Options`` and ``Cache-Control: no-store`` for anything not
static, and ``Strict-Transport-Security`` whenever the console is served over TLS (its own, or a
trusted reverse proxy's: ``admin_ui.session.served_over_tls``). Errors become the console's HTML
page or, under ``/admin/api`` and ``/admin/usage``, a JSON object (with ``field`` for a bad value);
an unexpected exception is logged with its traceback and answered the same way as a 500, never
with aiohttp's text or the proxy's OpenAI envelope.

A refusal (403: a viewer's write, a read-only token's write) is logged and written to the audit
log as ``access.denied``: who, which method and route, from which address; never a form value or a
token. A missing or wrong CSRF token is logged only (a forged request speaks for nobody).

Authentication: an admin API token (``Authorization: Bearer llmsadm_...``, JSON API only), acting
as its owning account with that account's current role narrowed by the token's scope, or a session
(``admin_ui.session``). A request the page makes in the background (the dashboard's and the models
page's polling, marked ``X-Console-Poll: 1``) does not count as activity for the idle timeout. An
account whose password was generated or set by an admin reaches only its account page until it
has chosen its own. CSRF: a state-changing request made with a session must carry the session's
token as the form field ``csrf`` or the ``X-CSRF-Token`` header (compared in constant time); a
bearer token is not ambient, so it needs none.
"""

from __future__ import annotations

import hmac
import logging
import time
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import get_session

from admin_ui.appkeys import Principal, client_addr_key, db_key, principal_key, settings_key
from admin_ui.envelope import envelope
from admin_ui.session import csrf_token, served_over_tls, session_valid, touch
from proxy.auth.clientaddr import client_address
from proxy.storage.admin_tokens import AdminTokenRepository
from proxy.storage.audit import record_audit
from proxy.storage.errors import KeyNotFoundError, StorageError, ValidationError
from proxy.storage.users import UserExistsError, UserNotFoundError, UserRepository

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"
PUBLIC = ("/admin/login", "/admin/login/totp", "/admin/static/")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")
POLL_HEADER = "X-Console-Poll"  # set by admin.js on background refreshes: no idle-timeout touch
PASSWORD_CHANGE = ("/admin/account", "/admin/account/password", "/admin/logout")


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/admin/api/") or request.path == "/admin/usage"


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect: raised on, with the headers (and any session cookie) it has
            exc.headers.update(_headers(request))
            exc.headers["Cache-Control"] = "no-store"
            raise
        if exc.status == 403:
            await _attribute_refusal(request)
        if is_api(request) and exc.content_type == "application/json" and exc.text:
            response = web.Response(status=exc.status, text=exc.text, content_type="application/json")
        else:  # the model and token API (admin_ui.api) raise their JSON envelope already
            response = await _error(request, exc.status, exc.reason, exc.text)
        for cookie in exc.headers.getall("Set-Cookie", []):
            response.headers.add("Set-Cookie", cookie)
    except ValidationError as exc:
        response = await _error(request, 400, "Bad Request", str(exc), exc.field)
    except UserExistsError as exc:
        response = await _error(request, 400, "Bad Request", str(exc), "username")
    except (KeyNotFoundError, UserNotFoundError) as exc:
        response = await _error(request, 404, "Not Found", str(exc))
    except StorageError as exc:
        log.error("admin request %s %s failed: %s", request.method, request.path, exc)
        response = await _error(request, 503, "Service Unavailable", "the database is not available")
    except ConnectionError:  # the client left, or its connection was closed for another: nobody to answer
        raise
    except Exception:  # a bug: logged with its traceback, answered with the console's own page
        log.exception("admin request %s %s failed", request.method, request.path)
        response = await _error(request, 500, "Internal Server Error", "something went wrong; it has been logged")
    response.headers.update(_headers(request))
    if not request.path.startswith("/admin/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def headers_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """The same headers on a streamed answer (the CSV export), whose headers are sent before the
    middleware sees it (``app.on_response_prepare``)."""
    if request.path.startswith("/admin/"):
        response.headers.update(_headers(request))
        if not request.path.startswith("/admin/static/"):
            response.headers["Cache-Control"] = "no-store"


def _headers(request: web.Request) -> dict[str, str]:
    if served_over_tls(request, request.app[settings_key]):
        return {**SECURITY_HEADERS, "Strict-Transport-Security": HSTS}
    return SECURITY_HEADERS


async def _attribute_refusal(request: web.Request) -> None:
    """Who was refused what (issue 19): a log line always, an audit entry when someone is signed in."""
    principal = request.get(principal_key)
    who = principal.name if principal is not None else "anonymous"
    address = request.get(client_addr_key) or request.remote or "unknown"
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
    log.warning("refused %s %s (%s) to %s from %s", request.method, request.path, route, who, address)
    if principal is None:
        return  # an anonymous refusal (no CSRF token on the login form) is a log line, not an audit entry
    try:
        target = f"{request.method} {route}"
        await record_audit(request.app[db_key], who, address, "access.denied", target, after={"path": request.path})
    except StorageError as exc:
        log.error("could not audit a refused request: %s", exc)


async def _error(
    request: web.Request, status: int, reason: str, text: str | None, field: str | None = None
) -> web.StreamResponse:
    message = text if text and not text.startswith(f"{status}:") else reason
    if is_api(request):
        return web.json_response(envelope(status, message, field=field), status=status)
    principal = request.get(principal_key)
    context = {"status": status, "reason": reason, "detail": message, "me": principal}
    return aiohttp_jinja2.render_template("error.html", request, context, status=status)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[settings_key]
    request[client_addr_key] = (
        client_address(request.remote, request.headers.getall("X-Forwarded-For", ()), settings.trusted_proxies)
        or "unknown"
    )
    bearer = _bearer(request)
    if bearer is not None:
        request[principal_key] = await _token_principal(request, bearer)
        return await handler(request)
    session = await get_session(request)
    if request.path.startswith(PUBLIC):
        if request.method in UNSAFE:
            _check_csrf(request, csrf_token(session), await _form_token(request))
        return await handler(request)
    principal = await _session_principal(request)
    if request.method in UNSAFE:
        _check_csrf(request, principal.csrf, await _form_token(request))
    request[principal_key] = principal
    return await handler(request)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _token_principal(request: web.Request, raw: str) -> Principal:
    if not is_api(request):
        raise web.HTTPUnauthorized(text="admin API tokens are accepted by /admin/api only")
    found = await AdminTokenRepository(request.app[db_key]).verify(raw)
    if found is None:
        raise web.HTTPUnauthorized(text="unknown, expired or revoked admin API token, or its account is disabled")
    token, role = found
    return Principal(name=f"token:{token.name}", role=role, via="token", user_id=token.user_id)


async def _session_principal(request: web.Request) -> Principal:
    session = await get_session(request)
    uid, now = session.get("uid"), time.time()
    user = await UserRepository(request.app[db_key]).get_user(uid) if isinstance(uid, int) else None
    if user is None or not session_valid(session, user, request.app[settings_key], now):
        if uid is not None:
            session.invalidate()
        if is_api(request):
            raise web.HTTPUnauthorized(text="log in, or send an admin API token")
        target = request.path_qs if request.method == "GET" else "/admin/"
        raise web.HTTPSeeOther(f"/admin/login?next={quote(target, safe='/')}")
    if request.headers.get(POLL_HEADER) != "1":
        touch(session, now)
    if user.password_change_required and request.path not in PASSWORD_CHANGE:
        _require_password_change(request)
    return Principal(user.username, user.role, "session", user.id, csrf_token(session))


def _require_password_change(request: web.Request) -> None:
    if request.method == "GET" and not is_api(request):
        raise web.HTTPSeeOther("/admin/account")
    raise web.HTTPForbidden(text="this account must choose its own password first (on its Account page)")


async def _form_token(request: web.Request) -> str | None:
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        value = (await request.post()).get("csrf")
        return value if isinstance(value, str) else None
    return None


def _check_csrf(request: web.Request, expected: str, given: str | None) -> None:
    if not given or not hmac.compare_digest(expected.encode(), given.encode()):
        log.info("refused %s %s: missing or wrong CSRF token", request.method, request.path)
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and try again")


def require_admin(request: web.Request) -> Principal:
    """The principal, if it may change things (role or token scope ``admin``); else 403."""
    principal = request[principal_key]
    if not principal.can_write:
        raise web.HTTPForbidden(text="this account (or token) may only read")
    return principal
