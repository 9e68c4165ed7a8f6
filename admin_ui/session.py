"""Admin sessions: encrypted cookies, revocable on the server, with idle and absolute timeouts.

The cookie is aiohttp-session's ``EncryptedCookieStorage`` (Fernet) under a 32-byte key derived
from ``LLMSERVER_SESSION_KEY`` with HKDF-SHA256, so the configured secret itself never encrypts
anything and other uses can derive their own keys from it. The cookie is ``HttpOnly``,
``SameSite=Strict``, and ``Secure`` whenever TLS is on.

A cookie alone proves nothing for long: it carries the user id, the account's ``session_epoch``
when it was issued, its login time and its last activity. Every request reads the account row
(one primary-key read) and refuses the session when the account is gone or disabled, when the
epoch moved on (logout, password change, role change, disabling: in any process), when it was
idle longer than the idle timeout, or older than the absolute timeout. Logging in always starts a
brand-new session with a fresh id and CSRF token, so a session planted before login is useless.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web
from aiohttp_session import Session, get_session, new_session
from aiohttp_session import setup as setup_session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.settings import Settings
from proxy.storage.users import User

COOKIE_NAME = "llmserver_admin"
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
    storage = EncryptedCookieStorage(
        cookie_key(settings.session_key),  # 32 raw bytes (Fernet: 16 to sign, 16 to encrypt)
        cookie_name=COOKIE_NAME,
        path="/admin",
        httponly=True,
        samesite="Strict",
        secure=settings.tls_enabled,
        max_age=None,  # a browser-session cookie; the absolute timeout is enforced here, not by the browser
    )
    setup_session_middleware(app, storage)


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
