"""The Models page: every registered model with its state and live download progress, and the
actions of the lifecycle (register, "Run" a Hugging Face id, download, cancel, start, stop, remove).

Forms post here (CSRF checked by the console's middleware), act through the same
:class:`~proxy.lifecycle.registry.Registry` as the JSON API and the CLI, write an audit entry and
redirect back (post/redirect/get). A download runs on in the background; its progress is on the
model's row, which ``/admin/static/admin.js`` reads from ``/admin/api/models`` once a second to
move the progress bars. Without JavaScript the page still works: reload it to see the progress.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.api.common import translate
from admin_ui.api.models import background, lifecycle_key
from admin_ui.audited import audit
from admin_ui.security import require_admin
from proxy.lifecycle.errors import LifecycleError
from proxy.lifecycle.registry import Registry
from proxy.storage.errors import StorageError
from proxy.storage.models import check_model_name

routes = web.RouteTableDef()

KINDS = ("llm", "tts", "stt")
ACTIONS = ("pull", "cancel", "start", "stop", "remove")


def _registry(request: web.Request) -> Registry:
    return request.app[lifecycle_key].registry


async def _page(request: web.Request, status: int = 200, **extra: Any) -> web.Response:
    registry = _registry(request)
    context = {
        "models": await registry.store.list(),
        "hf_tokens": await registry.tokens.list(),
        "kinds": KINDS,
        "error": None,
        **extra,
    }
    return aiohttp_jinja2.render_template("models.html", request, context, status=status)


def _failed_status(exc: Exception) -> int:
    return translate(exc).status


def _token_id(form: Any) -> int | None:
    text = str(form.get("hf_token_id", "") or "").strip()
    return int(text) if text.isdigit() else None


@routes.get("/models")
async def models_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/models")
async def register_model(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    fields: dict[str, Any] = {"kind": str(form.get("kind", "llm"))}
    repo, file, path = (str(form.get(k, "") or "").strip() for k in ("source_repo", "file", "local_path"))
    if repo:
        fields["source_repo"] = repo
        if file:
            fields["files"] = [file]
    if path:
        fields["local_path"] = path
    token_id = _token_id(form)
    if token_id is not None:
        fields["hf_token_id"] = token_id
    name = str(form.get("name", "")).strip()
    try:
        record = await _registry(request).add(name, **fields)
    except (StorageError, LifecycleError) as exc:
        return await _page(request, _failed_status(exc), error=str(exc))
    await audit(request, "model.add", f"model {record.name}", after={"name": record.name, **fields})
    raise web.HTTPSeeOther("/admin/models")


@routes.post("/models/run")
async def run_model(request: web.Request) -> web.Response:
    """The "Run" button: ``REPO[:FILE]`` registered, downloaded and started (in the background)."""
    require_admin(request)
    form = await request.post()
    spec, name, token_id = str(form.get("spec", "")).strip(), str(form.get("name", "")).strip(), _token_id(form)
    registry = _registry(request)
    try:
        plan = await registry.plan_run(spec, name or None, token_id)
        created = await registry.store.find(plan.name) is None
        if created:
            extra = {"hf_token_id": token_id} if token_id is not None else {}
            await registry.add(plan.name, source_repo=plan.repo, files=[plan.file], **extra)
    except (StorageError, LifecycleError) as exc:
        return await _page(request, _failed_status(exc), error=str(exc))
    background(request, lambda: registry.run(plan, forget_on_failure=created), f"running {plan.name}")
    details = {"name": plan.name, "repo": plan.repo, "file": plan.file}
    await audit(request, "model.run", f"model {plan.name}", after=details)
    return await _page(request, message=f"running {plan.name}: {plan.file} ({plan.reason})")


@routes.post(r"/models/{name}/{action:(pull|cancel|start|stop|remove)}")
async def model_action(request: web.Request) -> web.Response:
    require_admin(request)
    action, registry = request.match_info["action"], _registry(request)
    try:
        name = check_model_name(request.match_info["name"])
        if action == "pull":
            await registry.store.get(name)
            background(request, lambda: registry.pull(name), f"downloading {name}")
        elif action == "cancel":
            if not registry.cancel(name):
                return await _page(request, 409, error=f"no download of {name!r} is running")
        elif action == "remove":
            await registry.remove(name)
        else:
            await (registry.start(name) if action == "start" else registry.stop(name))
    except (StorageError, LifecycleError) as exc:
        return await _page(request, _failed_status(exc), error=str(exc))
    verb = "remove" if action == "remove" else action
    await audit(request, f"model.{verb}", f"model {name}", after={"name": name})
    raise web.HTTPSeeOther("/admin/models")
