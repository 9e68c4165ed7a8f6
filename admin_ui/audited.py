"""Audit entries for admin actions, with who and from where taken from the request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from admin_ui.appkeys import client_addr_key, db_key, principal_key
from proxy.storage.audit import record_audit


async def audit(
    request: web.Request,
    action: str,
    target: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Record ``action`` by the request's principal (or ``actor``, for a login) from its client address."""
    principal = request.get(principal_key)
    who = actor or (principal.name if principal is not None else "anonymous")
    await record_audit(request.app[db_key], who, request[client_addr_key], action, target, before, after)


def key_view(key: Any) -> dict[str, Any]:
    """The public fields of an API key (for pages, the JSON API and the audit log; never the hash)."""
    return {
        "id": key.id,
        "public_id": key.public_id,
        "name": key.name,
        "last_four": key.last_four,
        "user_id": key.user_id,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "disabled_at": key.disabled_at,
        "expires_at": key.expires_at,
        "token_limit": key.token_limit,
        "budget_period": key.budget_period,
        "tokens_used": key.tokens_used,
        "tokens_reserved": key.tokens_reserved,
        "request_count": key.request_count,
        "last_request_at": key.last_request_at,
        "endpoint_counts": dict(key.endpoint_counts),
        "allowed_models": None if key.allowed_models is None else list(key.allowed_models),
        "allowed_cidrs": None if key.allowed_cidrs is None else list(key.allowed_cidrs),
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
    }
