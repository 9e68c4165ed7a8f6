"""The Hugging Face tokens page: add a token with a label, list (label and last four), delete, choose
the default. A token goes into the vault once and is never shown again, on this page or any other:
the page holds labels, last four characters and ids only, and the audit log the label and id.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.api.common import translate
from admin_ui.api.hf_tokens import tokens_lifecycle_key
from admin_ui.audited import audit
from admin_ui.security import require_admin
from proxy.lifecycle.errors import LifecycleError
from proxy.storage.errors import StorageError

routes = web.RouteTableDef()


async def _page(request: web.Request, status: int = 200, **extra: Any) -> web.Response:
    require_admin(request)
    tokens = await request.app[tokens_lifecycle_key].registry.tokens.list()
    context = {"hf_tokens": tokens, "error": None, **extra}
    return aiohttp_jinja2.render_template("hf_tokens.html", request, context, status=status)


@routes.get("/hf-tokens")
async def tokens_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/hf-tokens")
async def add_token(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    store = request.app[tokens_lifecycle_key].registry.tokens
    try:
        stored = await store.add(
            str(form.get("label", "")).strip(), str(form.get("token", "")).strip(), default=bool(form.get("default"))
        )
    except (StorageError, LifecycleError) as exc:
        return await _page(request, translate(exc).status, error=str(exc))
    await audit(request, "hf_token.add", f"hf token {stored.id}", after={"id": stored.id, "label": stored.label})
    raise web.HTTPSeeOther("/admin/hf-tokens")


@routes.post(r"/hf-tokens/{token_id:\d+}/{action:(delete|default)}")
async def token_action(request: web.Request) -> web.Response:
    require_admin(request)
    token_id, action = int(request.match_info["token_id"]), request.match_info["action"]
    registry = request.app[tokens_lifecycle_key].registry
    try:
        if action == "delete":
            await registry.delete_token(token_id)
        else:
            await registry.tokens.set_default(token_id)
    except (StorageError, LifecycleError) as exc:
        return await _page(request, translate(exc).status, error=str(exc))
    await audit(request, f"hf_token.{action}", f"hf token {token_id}", after={"id": token_id})
    raise web.HTTPSeeOther("/admin/hf-tokens")
