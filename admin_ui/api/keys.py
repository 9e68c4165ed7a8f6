"""``/admin/api/api-keys``: list (searched, filtered, sorted, paged by keyset), create, read with its
last 30 days, change, revoke, disable and enable API keys. A new key's secret is in the create answer
only. Every handler reads as auth -> parse -> call -> respond (``admin_ui.api.common``).
"""

from __future__ import annotations

import time

from aiohttp import web

from admin_ui.actions import key_repository
from admin_ui.actions import requested_key as _key
from admin_ui.api.common import NULL, TEXT, WHOLE, Auth, guard, install_auth, read_body
from admin_ui.appkeys import db_key, principal_key, reports_key
from admin_ui.forms import key_fields_from_json
from proxy.storage.key_list import key_query, read_key_page
from proxy.storage.usage_report import UsageFilter

LIMIT, LIST = (*WHOLE, NULL), (list, NULL)
FIELDS: dict[str, tuple[type, ...]] = {
    "name": TEXT,
    "token_limit": LIMIT,
    "rpm_limit": LIMIT,
    "tpm_limit": LIMIT,
    "budget_period": (str, NULL),
}
FIELDS |= {"allowed_models": LIST, "allowed_cidrs": LIST, "expires_at": (int, float, str, NULL)}


def setup_key_routes(app: web.Application, *, auth: Auth, prefix: str = "/admin/api") -> None:
    """Add the routes under ``prefix`` (``/api`` in a sub-application mounted at ``/admin``)."""
    install_auth(app, auth)
    base, one = f"{prefix}/api-keys", prefix + r"/api-keys/{key_id:\d{1,15}}"
    app.router.add_get(base, list_keys)
    app.router.add_post(base, create_key)
    app.router.add_get(one, get_key)
    app.router.add_patch(one, update_key)
    app.router.add_post(one + "/revoke", key_action)
    app.router.add_post(one + "/disable", key_action)
    app.router.add_post(one + "/enable", key_action)


async def list_keys(request: web.Request) -> web.Response:
    """A page of keys (``q``, ``state``, ``sort``, ``after`` or ``before``, ``limit``: ``proxy.storage.key_list``)."""
    await guard(request)
    q = key_query(request.query)
    page = await read_key_page(request.app[db_key], q)
    now = time.time()
    keys = [{**k.public(), "state": k.listed_state(now), "quota_used": k.quota_used(now)} for k in page.keys]
    return web.json_response({"keys": keys, "next": page.next_cursor, "previous": page.previous_cursor})


async def create_key(request: web.Request) -> web.Response:
    by = await guard(request)
    fields = key_fields_from_json(await read_body(request, FIELDS), partial=False)
    owner = request[principal_key].user_id
    full_key, key = await key_repository(request).create_key(user_id=owner, by=by, **fields)
    return web.json_response({"key": key.public(), "full_key": full_key}, status=201)


async def get_key(request: web.Request) -> web.Response:
    await guard(request)
    key = await _key(request)
    report = await request.app[reports_key].report(UsageFilter.last_days(30, api_key_id=key.id))
    return web.json_response({"key": key.public(), "usage_last_30_days": report.by_day})


async def update_key(request: web.Request) -> web.Response:
    by = await guard(request)
    fields = key_fields_from_json(await read_body(request, FIELDS), partial=True)
    key = await key_repository(request).update_key((await _key(request)).id, by=by, **fields)
    return web.json_response({"key": key.public()})


async def key_action(request: web.Request) -> web.Response:
    """Revoke (for good), disable (refused like a revoked key within a second, until enabled) or enable."""
    by = await guard(request)
    key_id, action = (await _key(request)).id, request.path.rsplit("/", 1)[-1]
    repo = key_repository(request)
    if action == "revoke":
        key = await repo.revoke_key(key_id, by=by)
    else:
        key = await repo.set_disabled(key_id, action == "disable", by=by)
    return web.json_response({"key": key.public()})
