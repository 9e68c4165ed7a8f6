"""Who makes an admin change, taken from the request: its principal and client address (issue 20).

A change passes ``by=actor_of(request)`` to the storage or registry method that makes it, which
writes the audit row in the change's own transaction (``proxy.storage.audit``); no handler writes an
audit row for a change itself. Events that are their own change (a login, a refused
re-authentication) are :func:`audit_event`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from admin_ui.appkeys import client_addr_key, db_key, principal_key
from proxy.storage.api_keys import ApiKey
from proxy.storage.audit import Actor, Audit, record_event


def actor_of(request: web.Request) -> Actor:
    """The request's principal (``alice``, ``token:ci``) from its client address."""
    principal = request.get(principal_key)
    return Actor(principal.name if principal is not None else "anonymous", request.get(client_addr_key) or "unknown")


async def audit_event(
    request: web.Request,
    action: str,
    target: str | None = None,
    after: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Record the event ``action`` by the request's principal (or ``actor``, for a login)."""
    by = actor_of(request)
    if actor is not None:
        by = Actor(actor, by.source)
    await record_event(request.app[db_key], by, Audit(action, target, after=after))


def key_view(key: ApiKey) -> dict[str, Any]:
    """The public fields of an API key (``ApiKey.public``; never the hash)."""
    return key.public()
