"""The JSON admin API: the pages' data and actions for scripts (documented in ``admin_ui/openapi.yaml``).

Authenticated by a session plus the ``X-CSRF-Token`` header on writes, or by an admin API token
(``Authorization: Bearer llmsadm_...``); a ``viewer`` token or account may only read. Errors are
``{"error": {"status", "message"}}``.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from admin_ui.api.common import SURROGATE
from admin_ui.appkeys import db_key, hasher_key, reports_key
from admin_ui.audited import actor_of, key_view
from admin_ui.forms import key_fields_from_json
from admin_ui.passwords import checked_password, generate_password, hash_password
from admin_ui.security import require_admin
from admin_ui.views.audit_log import audit_entries
from admin_ui.views.keys import repository
from admin_ui.views.usage import usage_filter
from admin_ui.views.users import apply_user_action
from proxy.storage.errors import KeyNotFoundError, ValidationError
from proxy.storage.key_list import key_query, read_key_page
from proxy.storage.usage_report import UsageFilter
from proxy.storage.users import UserRepository, check_role
from proxy.unicode_text import lone_surrogate

routes = web.RouteTableDef()


async def _body(request: web.Request) -> Any:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        raise ValidationError("the body must be JSON") from None
    if lone_surrogate(await request.read(), body):
        raise ValidationError(SURROGATE)
    return body


def _key_id(request: web.Request) -> int:
    return int(request.match_info["key_id"])


@routes.get("/api/api-keys")
async def list_keys(request: web.Request) -> web.Response:
    """A page of keys (``q``, ``state``, ``sort``, ``after``, ``limit``: ``proxy.storage.key_list``)."""
    q = key_query(request.query)
    page = await read_key_page(request.app[db_key], q)
    now = time.time()
    keys = [{**key_view(k), "state": k.listed_state(now), "quota_used": k.quota_used(now)} for k in page.keys]
    return web.json_response({"keys": keys, "next": page.next_cursor})


@routes.post("/api/api-keys")
async def create_key(request: web.Request) -> web.Response:
    principal = require_admin(request)
    fields = key_fields_from_json(await _body(request), partial=False)
    full_key, key = await repository(request).create_key(user_id=principal.user_id, by=actor_of(request), **fields)
    return web.json_response({"key": key_view(key), "full_key": full_key}, status=201)


@routes.get(r"/api/api-keys/{key_id:\d{1,15}}")
async def get_key(request: web.Request) -> web.Response:
    key = await repository(request).get_key(_key_id(request))
    if key is None:
        raise KeyNotFoundError(f"no API key {_key_id(request)}")
    report = await request.app[reports_key].report(UsageFilter.last_days(30, api_key_id=key.id))
    return web.json_response({"key": key_view(key), "usage_last_30_days": report.by_day})


@routes.patch(r"/api/api-keys/{key_id:\d{1,15}}")
async def update_key(request: web.Request) -> web.Response:
    require_admin(request)
    fields = key_fields_from_json(await _body(request), partial=True)
    before = await repository(request).get_key(_key_id(request))
    if before is None:
        raise KeyNotFoundError(f"no API key {_key_id(request)}")
    after = await repository(request).update_key(before.id, by=actor_of(request), **fields)
    return web.json_response({"key": key_view(after)})


@routes.post(r"/api/api-keys/{key_id:\d{1,15}}/revoke")
async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await repository(request).get_key(_key_id(request))
    if before is None:
        raise KeyNotFoundError(f"no API key {_key_id(request)}")
    after = await repository(request).revoke_key(before.id, by=actor_of(request))
    return web.json_response({"key": key_view(after)})


@routes.post(r"/api/api-keys/{key_id:\d{1,15}}/disable")
async def disable_key(request: web.Request) -> web.Response:
    """Disable a key: refused like a revoked one, in every process within a second, until enabled."""
    return await _set_disabled(request, True)


@routes.post(r"/api/api-keys/{key_id:\d{1,15}}/enable")
async def enable_key(request: web.Request) -> web.Response:
    return await _set_disabled(request, False)


async def _set_disabled(request: web.Request, disabled: bool) -> web.Response:
    require_admin(request)
    before = await repository(request).get_key(_key_id(request))
    if before is None:
        raise KeyNotFoundError(f"no API key {_key_id(request)}")
    after = await repository(request).set_disabled(before.id, disabled, by=actor_of(request))
    return web.json_response({"key": key_view(after)})


@routes.get("/api/usage")
async def usage(request: web.Request) -> web.Response:
    flt = usage_filter(request.query)
    report = await request.app[reports_key].report(flt)
    return web.json_response({"filter": flt.__dict__, **report.as_json()})


@routes.get("/usage")
async def usage_per_key(request: web.Request) -> web.Response:
    """Per key, the original middleware's figures: requests, tokens, last request, per endpoint."""
    keys = await repository(request).list_keys()
    return web.json_response(
        {
            "keys": [
                {
                    "id": k.id,
                    "name": k.name,
                    "last_four": k.last_four,
                    "total_requests": k.request_count,
                    "total_tokens": k.tokens_used,
                    "last_request_at": k.last_request_at,
                    "requests_per_endpoint": dict(k.endpoint_counts),
                }
                for k in keys
            ]
        }
    )


@routes.get("/api/users")
async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    users = await UserRepository(request.app[db_key]).list_users()
    return web.json_response({"users": [u.public() for u in users]})


@routes.post("/api/users")
async def create_user(request: web.Request) -> web.Response:
    require_admin(request)
    body = await _body(request)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    given = body.get("password")
    password = await checked_password(str(given)) if given is not None else generate_password()
    user = await UserRepository(request.app[db_key]).create_user(
        str(body.get("username", "")),
        await hash_password(password, request.app[hasher_key]),
        check_role(str(body.get("role", "viewer"))),
        change_required=True,  # generated or chosen by an admin: the account chooses its own at first login
        by=actor_of(request),
    )
    answer: dict[str, Any] = {"user": user.public()}
    if given is None:
        answer["password"] = password  # generated: shown this once
    return web.json_response(answer, status=201)


@routes.patch(r"/api/users/{user_id:\d{1,15}}")
async def change_user(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object")
    user, password = await apply_user_action(
        request, int(request.match_info["user_id"]), str(body.get("action", "")), body.get("role")
    )
    answer: dict[str, Any] = {"user": user.public()}
    if password is not None:
        answer["password"] = password
    return web.json_response(answer)


@routes.get("/api/audit")
async def audit_json(request: web.Request) -> web.Response:
    entries = await audit_entries(request)
    return web.json_response({"entries": [e.as_json() for e in entries]})
