"""Post/redirect/get: every console form POST answers with a redirect, and what the next page must
say travels in the session for exactly one GET (issue 19).

:func:`done` and :func:`failed` store a *flash* (a message, or an error with the field at fault and
what was typed, so the form comes back filled in) and return the redirect to raise. A secret shown
once (a new API key, a generated password, a new admin token) goes into the flash too: the session
cookie is encrypted and ``HttpOnly``, the secret is in it for one request, and the page that shows
it pops it, so a reload shows it no more and re-submits nothing. The template context gets the
flash as ``flash`` (``admin_ui.app``'s context processor pops it).

What was typed is kept short (the cookie must stay small) and never holds a password or a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp_session import get_session

FLASH = "flash"
MAX_TYPED = 300  # characters kept of each typed value
MAX_KEPT = 1500  # characters kept of a whole form
flash_key: web.RequestKey[dict[str, Any]] = web.RequestKey("admin_flash", dict)
# Secrets a form may carry (the account page's and the token form's re-authentication included):
# never written into the flash, so a refused form puts no password into the cookie.
NOT_KEPT = frozenset(
    {"csrf", "password", "token", "new_password", "current_password", "code", "current", "new", "again"}
)


def _typed(form: Mapping[str, Any] | None) -> dict[str, Any]:
    """What was typed into ``form`` (multi-valued fields as lists), without secrets, at most
    ``MAX_KEPT`` characters in all (the session cookie must stay far below a browser's 4 kB)."""
    kept: dict[str, Any] = {}
    if form is None:
        return kept
    room = MAX_KEPT
    for name in dict.fromkeys(form.keys()):
        if name in NOT_KEPT or not isinstance(name, str) or len(name) > 40:
            continue
        values = form.getall(name) if hasattr(form, "getall") else [form[name]]
        texts = [str(v)[:MAX_TYPED] for v in values if isinstance(v, str)]
        room -= sum(len(t) + len(name) for t in texts)
        if room < 0:
            break
        kept[name] = texts if len(texts) != 1 else texts[0]
    return kept


async def done(request: web.Request, location: str, message: str | None = None, **shown: Any) -> web.HTTPSeeOther:
    """The redirect after a change that worked; ``message`` and ``shown`` (a secret shown once) ride along."""
    if message is not None or shown:
        (await get_session(request))[FLASH] = {"message": message, **shown}
    return web.HTTPSeeOther(location)


async def failed(
    request: web.Request,
    location: str,
    error: str,
    field: str | None = None,
    form: Mapping[str, Any] | None = None,
    which: str | None = None,
) -> web.HTTPSeeOther:
    """The redirect after a refused change: the error, its field and what was typed come back
    (``which`` names the form, on a page with several)."""
    flash = {"error": error, "field": field, "form": _typed(form), "which": which}
    (await get_session(request))[FLASH] = flash
    return web.HTTPSeeOther(location)


async def take(request: web.Request) -> dict[str, Any]:
    """The flash for this page, removed from the session (empty when there is none); the same
    for every call during one request (the handler's and the template context's)."""
    if flash_key not in request:
        session = await get_session(request)
        found = session.pop(FLASH, None) if FLASH in session else None
        request[flash_key] = found if isinstance(found, dict) else {}
    return request[flash_key]
