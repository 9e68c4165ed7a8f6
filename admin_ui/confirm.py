"""The second step of a destructive action (issue 19): remove a model, revoke a key, disable a user,
delete a Hugging Face token, revoke an admin token.

The button on a list is a link to a confirmation page (a GET: it changes nothing, and works without
JavaScript) that says what the action breaks and holds the form that really posts, with the CSRF
token and ``confirm=yes``. A POST without ``confirm=yes`` (an old page, a hand-made form) changes
nothing either: it is redirected to the confirmation page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import aiohttp_jinja2
from aiohttp import web


def confirmed(form: Mapping[str, Any]) -> bool:
    return form.get("confirm") == "yes"


def when(stamp: float | None) -> str:
    """A past moment for a sentence: ``2026-12-07 14:46 UTC``, or ``never``."""
    return "never" if stamp is None else datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def confirm_page(
    request: web.Request,
    *,
    title: str,
    summary: str,
    consequences: Sequence[str],
    button: str,
    cancel: str,
    fields: Mapping[str, str] | None = None,
    action: str | None = None,
) -> web.Response:
    """The confirmation page; its form posts ``fields`` to ``action`` (this page's own address)."""
    context = {
        "title": title,
        "summary": summary,
        "consequences": list(consequences),
        "button": button,
        "action": action or request.path,
        "cancel": cancel,
        "fields": dict(fields or {}),
    }
    return aiohttp_jinja2.render_template("confirm.html", request, context)
