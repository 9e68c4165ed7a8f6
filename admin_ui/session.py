"""Admin sessions: encrypted cookies, revocable on the server, with idle and absolute timeouts.

The cookie is aiohttp-session's ``EncryptedCookieStorage`` (Fernet) under a 32-byte key derived
from ``LLMSERVER_SESSION_KEY`` with HKDF-SHA256, so the configured secret itself never encrypts
anything and other uses can derive their own keys from it.

Two cookies (issue 19), so that an anonymous visit never replaces a signed-in session:
``llmserver_admin`` (path ``/admin``, ``SameSite=Lax``) holds a signed-in session only, and is
written only for one (or deleted when that session ends); everything before login (the login form's
CSRF token, the pending second step) goes to ``llmserver_login`` (path ``/admin/login``,
``SameSite=Strict``). ``Lax`` lets a link from another site (a chat, a ticket) open the console
page it points to; every state change still needs the session's CSRF token, and a cross-site POST
carries no ``Lax`` cookie at all. Both cookies are ``HttpOnly``, and ``Secure`` whenever the
console is served over TLS (:func:`served_over_tls`): its own TLS, ``LLMSERVER_SECURE_COOKIES``, or
``X-Forwarded-Proto: https`` from a trusted reverse proxy.

A cookie alone proves nothing for long: it carries the user id, the account's ``session_epoch``
when it was issued, its login time and its last activity. Every request reads the account row
(one primary-key read) and refuses the session when the account is gone or disabled, when the
epoch moved on (logout, password change, role change, disabling: in any process), when it was
idle longer than the idle timeout, or older than the absolute timeout. Logging in always starts a
brand-new session with a fresh id and CSRF token, so a session planted before login is useless.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session, new_session
from aiohttp_session import setup as setup_session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.auth.clientaddr import forwarded_https
from proxy.settings import Settings
from proxy.storage.users import User

COOKIE_NAME = "llmserver_admin"
LOGIN_COOKIE = "llmserver_login"
LOGIN_PATH = "/admin/login"
_INFO = b"llmserver admin session cookie v1"
SEEN_GRANULARITY = 15.0  # seconds: the activity stamp is rewritten at most this often


class SessionKeyMissingError(ValueError):
    """The admin console cannot start without LLMSERVER_SESSION_KEY."""


def cookie_key(session_key: bytes) -> bytes:
    """The 32-byte Fernet key derived from ``LLMSERVER_SESSION_KEY``."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(session_key)


def setup_sessions(app: web.Application, settings: Settings) -> None:
    if settings.session_key is None:
        raise SessionKeyMissingError(
            "LLMSERVER_SESSION_KEY is not set: the admin console needs it for its session cookies "
            '(generate one with: python -c "import secrets; print(secrets.token_hex(64))")'
        )
    setup_session_middleware(app, ConsoleCookieStorage(cookie_key(settings.session_key), settings))


def served_over_tls(request: web.Request, settings: Settings) -> bool:
    """Whether the browser reached the console over TLS (then cookies are ``Secure`` and HSTS is sent)."""
    if settings.tls_enabled or settings.secure_cookies or request.secure:
        return True
    proto = request.headers.get("X-Forwarded-Proto")
    return forwarded_https(request.remote, proto, settings.trusted_proxies)


class ConsoleCookieStorage(EncryptedCookieStorage):
    """The two cookies of the module docstring, in one aiohttp-session storage."""

    def __init__(self, key: bytes, settings: Settings) -> None:
        self._box = Fernet(base64.urlsafe_b64encode(key))
        super().__init__(self._box, cookie_name=COOKIE_NAME, path="/admin", httponly=True, samesite="Lax")
        self._settings = settings

    def load_cookie(self, request: web.Request) -> str | None:
        return request.cookies.get(COOKIE_NAME) or request.cookies.get(LOGIN_COOKIE)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        secure = served_over_tls(request, self._settings)
        if "uid" in session or COOKIE_NAME in request.cookies:  # a signed-in session, or the end of one
            name, path, samesite = COOKIE_NAME, "/admin", "Lax"
            if LOGIN_COOKIE in request.cookies:
                response.del_cookie(LOGIN_COOKIE, path=LOGIN_PATH, secure=secure, samesite="Strict")
        else:  # anonymous: never the signed-in cookie, which the browser may merely have withheld
            name, path, samesite = LOGIN_COOKIE, LOGIN_PATH, "Strict"
        if session.empty:
            response.del_cookie(name, path=path, secure=secure, httponly=True, samesite=samesite)
            return
        data = json.dumps({"created": session.created, "session": dict(session)}).encode()
        # no max_age: a browser-session cookie; the absolute timeout is enforced here, not by the browser
        value = self._box.encrypt(data).decode()
        response.set_cookie(name, value, path=path, secure=secure, httponly=True, samesite=samesite)


async def start_session(request: web.Request, user: User) -> Session:
    """A brand-new session for ``user`` (never the pre-login one)."""
    old = await get_session(request)
    old.invalidate()
    session = await new_session(request)
    now = time.time()
    session.update(
        {
            "sid": secrets.token_urlsafe(16),
            "uid": user.id,
            "epoch": user.session_epoch,
            "created": now,
            "seen": now,
            "csrf": secrets.token_urlsafe(32),
        }
    )
    return session


def session_valid(session: Session, user: User | None, settings: Settings, now: float) -> bool:
    """Whether a session that names ``user`` may still act (see the module docstring)."""
    if user is None or user.disabled or session.get("epoch") != user.session_epoch:
        return False
    created, seen = _number(session.get("created")), _number(session.get("seen"))
    if now - created > settings.session_max_age or now - seen > settings.session_idle_timeout:
        return False
    return True


def touch(session: Session, now: float) -> None:
    """Note activity (for the idle timeout), without rewriting the cookie on every request."""
    if now - _number(session.get("seen")) >= SEEN_GRANULARITY:
        session["seen"] = now


def csrf_token(session: Session) -> str:
    """The session's CSRF token; an anonymous session (the login form) gets one too."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
