"""API key pages: list, create (the key shown once), a key's page with its usage, edit, revoke."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key, hasher_key, reports_key
from admin_ui.audited import audit, key_view
from admin_ui.forms import PERIODS, key_fields_from_form
from admin_ui.security import require_admin
from admin_ui.views.dashboard import running_models
from proxy.auth.apikey import key_minter
from proxy.storage.api_keys import ApiKey, KeyRepository
from proxy.storage.errors import KeyNotFoundError, ValidationError
from proxy.storage.usage_report import UsageFilter
from proxy.storage.users import UserRepository

routes = web.RouteTableDef()


def repository(request: web.Request) -> KeyRepository:
    return KeyRepository(request.app[db_key], key_minter(request.app[hasher_key]))


async def model_names(request: web.Request) -> list[str]:
    return [str(m["name"]) for m in (await running_models(request))["models"]]


async def _list_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    keys = await repository(request).list_keys()
    owners = {u.id: u.username for u in await UserRepository(request.app[db_key]).list_users()}
    models = await model_names(request)
    context: dict[str, object] = {"keys": keys, "owners": owners, "models": models, "periods": PERIODS, "error": error}
    return aiohttp_jinja2.render_template("keys.html", request, context, status=status)


@routes.get("/api-keys")
async def list_keys(request: web.Request) -> web.Response:
    return await _list_page(request)


@routes.post("/api-keys")
async def create_key(request: web.Request) -> web.Response:
    principal = require_admin(request)
    try:
        fields = key_fields_from_form(await request.post())
        full_key, key = await repository(request).create_key(user_id=principal.user_id, **fields)
    except ValidationError as exc:
        return await _list_page(request, str(exc), 400)
    await audit(request, "api_key.create", f"key {key.id}", after=key_view(key))
    return aiohttp_jinja2.render_template("key_created.html", request, {"key": key, "full_key": full_key})


async def _key(request: web.Request) -> ApiKey:
    try:
        key_id = int(request.match_info["key_id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such key") from None
    key = await repository(request).get_key(key_id)
    if key is None:
        raise KeyNotFoundError(f"no API key {key_id}")
    return key


@routes.get(r"/api-keys/{key_id:\d+}")
async def key_page(request: web.Request) -> web.Response:
    return await _key_page(request)


async def _key_page(request: web.Request, error: str | None = None, status: int = 200) -> web.Response:
    key = await _key(request)
    report = await request.app[reports_key].report(UsageFilter.last_days(30, api_key_id=key.id))
    context = {"key": key, "report": report, "models": await model_names(request), "periods": PERIODS}
    context["error"] = error
    return aiohttp_jinja2.render_template("key.html", request, context, status=status)


@routes.post(r"/api-keys/{key_id:\d+}")
async def edit_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await _key(request)
    try:
        fields = key_fields_from_form(await request.post())
        after = await repository(request).update_key(before.id, **fields)
    except ValidationError as exc:
        return await _key_page(request, str(exc), 400)
    await audit(request, "api_key.update", f"key {after.id}", key_view(before), key_view(after))
    raise web.HTTPSeeOther(f"/admin/api-keys/{after.id}")


@routes.post(r"/api-keys/{key_id:\d+}/revoke")
async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await _key(request)
    after = await repository(request).revoke_key(before.id)
    await audit(request, "api_key.revoke", f"key {after.id}", key_view(before), key_view(after))
    raise web.HTTPSeeOther("/admin/api-keys")
