"""API key pages: list, create (the key shown once), a key's page with its usage, edit, revoke.

Every POST answers with a redirect (``admin_ui.flash``): a new key's secret rides in the session to
``/admin/api-keys/created``, shown by that one GET; a refused form comes back filled in with the
error beside its field. Revoking asks first (``admin_ui.confirm``).
"""

from __future__ import annotations

from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from admin_ui.actions import key_repository as repository
from admin_ui.actions import requested_key as _key
from admin_ui.appkeys import db_key, reports_key, series_key
from admin_ui.audited import actor_of
from admin_ui.charts.usage import bucket_of, usage_charts
from admin_ui.confirm import confirm_page, confirmed, when
from admin_ui.flash import done, failed, take
from admin_ui.forms import PERIODS, key_fields_from_form
from admin_ui.security import require_admin
from admin_ui.views.dashboard import running_models
from proxy.storage.api_keys import ApiKey
from proxy.storage.errors import ValidationError
from proxy.storage.impact import recent_requests
from proxy.storage.key_list import SORTS, STATES, KeyPage, KeyQuery, key_query, read_key_page
from proxy.storage.request_log import FilterError
from proxy.storage.usage_report import UsageFilter
from proxy.storage.users import UserRepository

routes = web.RouteTableDef()
FORM_NAMES = {"expires_at": "expires"}  # a field's input name where it differs from the field


async def model_names(request: web.Request) -> list[str]:
    return [str(m["name"]) for m in (await running_models(request))["models"]]


@routes.get("/api-keys")
async def list_keys(request: web.Request) -> web.Response:
    """A page of keys: search, state, sort, keyset paging (``proxy.storage.key_list``)."""
    try:
        q, error = key_query(request.query), None
    except FilterError as exc:
        q, error = KeyQuery(), str(exc)
    page = KeyPage([], None) if error else await read_key_page(request.app[db_key], q)
    owners = {u.id: u.username for u in await UserRepository(request.app[db_key]).list_users()}
    params = q.params()
    context: dict[str, object] = {
        "keys": page.keys,
        "owners": owners,
        "models": await model_names(request),
        "periods": PERIODS,
        "q": q,
        "shown": request.query if error else params,
        "states": STATES,
        "sorts": SORTS,
        "next": urlencode({**params, "after": page.next_cursor}) if page.next_cursor else None,
        "previous": urlencode({**params, "before": page.previous_cursor}) if page.previous_cursor else None,
        "first": urlencode(params) if page.previous_cursor or (q.after and not page.keys) else None,
        "error": error,
    }
    return aiohttp_jinja2.render_template("keys.html", request, context, status=400 if error else 200)


@routes.post("/api-keys")
async def create_key(request: web.Request) -> web.Response:
    principal = require_admin(request)
    form = await request.post()
    try:
        fields = key_fields_from_form(form)
        full_key, key = await repository(request).create_key(user_id=principal.user_id, by=actor_of(request), **fields)
    except ValidationError as exc:
        raise await failed(request, "/admin/api-keys#create-key", str(exc), _input(exc.field), form) from None
    raise await done(request, "/admin/api-keys/created", full_key=full_key, key_id=key.id)


@routes.get("/api-keys/created")
async def key_created(request: web.Request) -> web.Response:
    """The new key, shown by this one GET after the create form's redirect; a reload shows it no more."""
    shown = await take(request)
    key = await repository(request).get_key(int(shown.get("key_id") or 0)) if shown.get("full_key") else None
    if key is None:
        raise web.HTTPSeeOther("/admin/api-keys")
    return aiohttp_jinja2.render_template("key_created.html", request, {"key": key, "full_key": shown["full_key"]})


def _input(field: str | None) -> str | None:
    return FORM_NAMES.get(field or "", field)


@routes.get(r"/api-keys/{key_id:\d{1,15}}")
async def key_page(request: web.Request) -> web.Response:
    key = await _key(request)
    flt = UsageFilter.last_days(30, api_key_id=key.id)
    report = await request.app[reports_key].report(flt)
    context = {"key": key, "report": report, "models": await model_names(request), "periods": PERIODS}
    context["charts"] = await usage_charts(request.app[series_key], flt, bucket_of(request.query), "key-chart")
    context["switch"] = {b: urlencode({"bucket": b}) for b in ("day", "hour")}
    return aiohttp_jinja2.render_template("key.html", request, context)


@routes.post(r"/api-keys/{key_id:\d{1,15}}")
async def edit_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await _key(request)
    form = await request.post()
    here = f"/admin/api-keys/{before.id}"
    try:
        fields = key_fields_from_form(form)
        after = await repository(request).update_key(before.id, by=actor_of(request), **fields)
    except ValidationError as exc:
        raise await failed(request, here + "#edit-key", str(exc), _input(exc.field), form) from None
    raise await done(request, here, f"key {after.name!r} saved")


async def _recent_use(request: web.Request, key: ApiKey) -> str:
    """What a confirmation says of the key's recent traffic (revoke and disable alike)."""
    used = await recent_requests(request.app[db_key], api_key_id=key.id)
    last = when(key.last_request_at)
    return f"{used:,} request{'s' if used != 1 else ''} in the last day used this key (last use: {last})."


@routes.get(r"/api-keys/{key_id:\d{1,15}}/revoke")
async def confirm_revoke(request: web.Request) -> web.Response:
    require_admin(request)
    key = await _key(request)
    consequences = [
        await _recent_use(request, key),
        "Every client that sends it is refused (401) at once, in every process; this cannot be undone.",
    ]
    return confirm_page(
        request,
        title=f"Revoke the key “{key.name}” (…{key.last_four})",
        summary="A revoked key stays listed with its usage, but never works again.",
        consequences=consequences,
        button="Revoke the key",
        cancel=f"/admin/api-keys/{key.id}",
    )


@routes.post(r"/api-keys/{key_id:\d{1,15}}/revoke")
async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await _key(request)
    if not confirmed(await request.post()):
        raise web.HTTPSeeOther(f"/admin/api-keys/{before.id}/revoke")
    after = await repository(request).revoke_key(before.id, by=actor_of(request))
    raise await done(request, "/admin/api-keys", f"key {after.name!r} revoked")


@routes.get(r"/api-keys/{key_id:\d{1,15}}/disable")
async def confirm_disable(request: web.Request) -> web.Response:
    require_admin(request)
    key = await _key(request)
    consequences = [
        await _recent_use(request, key),
        "Every client that sends it is refused (401) within a second, in every process, until it is enabled again.",
    ]
    return confirm_page(
        request,
        title=f"Disable the key “{key.name}” (…{key.last_four})",
        summary="A disabled key keeps its secret, limits and usage; enabling it makes it work again.",
        consequences=consequences,
        button="Disable the key",
        cancel=f"/admin/api-keys/{key.id}",
    )


@routes.post(r"/api-keys/{key_id:\d{1,15}}/disable")
async def disable_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await _key(request)
    if not confirmed(await request.post()):
        raise web.HTTPSeeOther(f"/admin/api-keys/{before.id}/disable")
    after = await repository(request).set_disabled(before.id, True, by=actor_of(request))
    raise await done(request, f"/admin/api-keys/{after.id}", f"key {after.name!r} disabled")


@routes.post(r"/api-keys/{key_id:\d{1,15}}/enable")
async def enable_key(request: web.Request) -> web.Response:
    require_admin(request)
    before = await _key(request)
    await request.post()
    after = await repository(request).set_disabled(before.id, False, by=actor_of(request))
    raise await done(request, f"/admin/api-keys/{after.id}", f"key {after.name!r} enabled")
