"""The admin actions a page and its JSON twin share: change an account, make and revoke admin API
tokens, the API key repository. Each passes who acts (``by=``) down to the storage method, which
audits the change in its own transaction (issue 20); the page and the API only parse and answer."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin_ui.appkeys import Principal, db_key, hasher_key
from admin_ui.audited import actor_of
from admin_ui.passwords import generate_password, hash_password
from admin_ui.reauth import confirm_password
from admin_ui.security import require_admin
from proxy.auth.apikey import key_minter
from proxy.storage.admin_tokens import AdminToken, AdminTokenRepository
from proxy.storage.api_keys import ApiKey, KeyRepository
from proxy.storage.errors import KeyNotFoundError, ValidationError
from proxy.storage.users import User, UserNotFoundError, UserRepository, check_role


def key_repository(request: web.Request) -> KeyRepository:
    return KeyRepository(request.app[db_key], key_minter(request.app[hasher_key]))


async def requested_key(request: web.Request) -> ApiKey:
    """The key of the route's ``{key_id}``; ``KeyNotFoundError`` (404) when there is none."""
    key_id = int(request.match_info["key_id"])
    key = await key_repository(request).get_key(key_id)
    if key is None:
        raise KeyNotFoundError(f"no API key {key_id}")
    return key


async def apply_user_action(
    request: web.Request, user_id: int, action: str, role: str | None
) -> tuple[User, str | None]:
    """Disable, enable, reset the password or set the role of an account; (user after, new password)."""
    principal = require_admin(request)
    repo = UserRepository(request.app[db_key])
    before = await repo.get_user(user_id)
    if before is None:
        raise UserNotFoundError(f"no user {user_id}")
    if before.id == principal.user_id and action in ("disable", "role"):
        raise ValidationError("you cannot disable yourself or change your own role", field="action")
    if before.id == principal.user_id and action == "reset-password":  # it would skip re-authentication
        raise ValidationError("change your own password on your Account page (it asks for the current one)", "action")
    password, by = None, actor_of(request)
    if action == "disable":
        after = await repo.set_disabled(user_id, True, by=by)
    elif action == "enable":
        after = await repo.set_disabled(user_id, False, by=by)
    elif action == "reset-password":
        password = generate_password()
        hashed = await hash_password(password, request.app[hasher_key])
        after = await repo.set_password(user_id, hashed, change_required=True, by=by)
    elif action == "role":
        after = await repo.set_role(user_id, check_role(role or ""), by=by)
    else:
        raise ValidationError("action must be disable, enable, reset-password or role", field="action")
    return after, password


async def make_token(request: web.Request, body: dict[str, Any]) -> tuple[str, AdminToken]:
    """Create a token owned by the signed-in account, after its password; audited."""
    principal: Principal = require_admin(request)
    if principal.via != "session" or principal.user_id is None:
        raise web.HTTPForbidden(text="a token cannot make tokens: sign in to the console (it asks for the password)")
    user = await UserRepository(request.app[db_key]).get_user(principal.user_id)
    assert user is not None  # the session was validated against this row a moment ago
    refused = await confirm_password(request, user, body.get("current_password"), "admin_token.create")
    if refused is not None:
        raise ValidationError(refused, field="current_password")
    name, scope = body.get("name"), body.get("scope", "viewer")
    if not isinstance(name, str):
        raise ValidationError("the name must be a string", field="name")
    if not isinstance(scope, str):
        raise ValidationError("the scope must be a string", field="scope")
    full, token = await AdminTokenRepository(request.app[db_key]).create(
        name, scope, principal.name, user.id, body.get("expires_in_days"), by=actor_of(request)
    )
    return full, token


async def revoke_token(request: web.Request) -> AdminToken:
    require_admin(request)
    token_id = int(request.match_info["token_id"])
    repo = AdminTokenRepository(request.app[db_key])
    token = await repo.revoke(token_id, by=actor_of(request)) if token_id < 2**63 else None
    if token is None:
        raise web.HTTPNotFound(text=f"no admin API token {request.match_info['token_id']}")
    return token
