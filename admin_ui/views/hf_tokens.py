"""The Hugging Face tokens page: add a token with a label, list (label and last four), delete, choose
the default. A token goes into the vault once and is never shown again, on this page or any other:
the page holds labels, last four characters and ids only, and the audit log the label and id.
Deleting asks first and names the models that used the token; a refused form comes back with its
label (never the token) and the error beside the field.
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import lifecycle_key
from admin_ui.audited import actor_of
from admin_ui.confirm import confirm_page, confirmed
from admin_ui.flash import done, failed
from admin_ui.security import require_admin
from proxy.lifecycle.errors import LifecycleError
from proxy.storage.errors import StorageError

routes = web.RouteTableDef()
HERE = "/admin/hf-tokens"


@routes.get("/hf-tokens")
async def tokens_page(request: web.Request) -> web.Response:
    require_admin(request)
    tokens = await request.app[lifecycle_key].registry.tokens.list()
    return aiohttp_jinja2.render_template("hf_tokens.html", request, {"hf_tokens": tokens})


@routes.post("/hf-tokens")
async def add_token(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    store, by = request.app[lifecycle_key].registry.tokens, actor_of(request)
    try:
        stored = await store.add(
            str(form.get("label", "")), str(form.get("token", "")), default=bool(form.get("default")), by=by
        )
    except (StorageError, LifecycleError) as exc:
        raise await failed(request, HERE + "#add-token", str(exc), getattr(exc, "field", None), form) from None
    raise await done(request, HERE, f"token {stored.label!r} stored")


@routes.get(r"/hf-tokens/{token_id:\d{1,15}}/delete")
async def confirm_delete(request: web.Request) -> web.Response:
    require_admin(request)
    registry = request.app[lifecycle_key].registry
    token = await registry.tokens.get(int(request.match_info["token_id"]))
    users = [m.name for m in await registry.store.list() if m.hf_token_id == token.id]
    said = []
    if users:
        verbs = "uses this token and falls" if len(users) == 1 else "use this token and fall"
        said.append(
            f"{len(users)} model{'s' if len(users) != 1 else ''} {verbs} back to the default token for "
            f"the next download: {', '.join(users[:10])}{'…' if len(users) > 10 else ''}"
        )
    if token.is_default:
        said.append(
            "It is the default token: downloads without a token of their own go anonymous (gated and "
            "private repositories fail)."
        )
    return confirm_page(
        request,
        title=f"Delete the Hugging Face token “{token.label}” (…{token.last_four})",
        summary="The token is erased from the vault; it cannot be shown or restored.",
        consequences=said or ["No model names this token, and it is not the default."],
        button="Delete the token",
        cancel=HERE,
    )


@routes.post(r"/hf-tokens/{token_id:\d{1,15}}/{action:(delete|default)}")
async def token_action(request: web.Request) -> web.Response:
    require_admin(request)
    token_id, action = int(request.match_info["token_id"]), request.match_info["action"]
    registry = request.app[lifecycle_key].registry
    if action == "delete" and not confirmed(await request.post()):
        raise web.HTTPSeeOther(f"{HERE}/{token_id}/delete")
    try:
        if action == "delete":
            await registry.delete_token(token_id, by=actor_of(request))
        else:
            await registry.tokens.set_default(token_id, by=actor_of(request))
    except (StorageError, LifecycleError) as exc:
        raise await failed(request, HERE, str(exc)) from None
    raise await done(request, HERE, f"token {token_id}: {'deleted' if action == 'delete' else 'now the default'}")
