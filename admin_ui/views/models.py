"""The Models page: every registered model with its state and live download progress, and the
actions of the lifecycle (register, "Run" a Hugging Face id, download, cancel, start, stop, remove).

Issue 19: a row offers only the actions that fit its state (``proxy.lifecycle.status``; a form
posted from a stale page for one that no longer fits comes back with the reason), shows its size on
disk and the memory it holds when loaded, and its error cut short with the whole of it a click away.
A model's parameters (``n_ctx``, ``n_threads``, keep-alive, voices) are set in the register form and
changed on its edit page (``/admin/models/{name}/edit``). "Test" runs one short generation through
the runtime and says how long it took (``proxy.lifecycle.trial``: bounded, audited, billed to no key).

Forms post here (CSRF checked by the console's middleware), act through the same
:class:`~proxy.lifecycle.registry.Registry` as the JSON API and the CLI, write an audit entry and
redirect back (post/redirect/get; a refused form comes back filled in, ``admin_ui.flash``). Removing
a model asks first and says what it breaks (``admin_ui.confirm``). A download runs on in the
background; its progress is on the model's row, which ``/admin/static/admin.js`` reads from
``/admin/api/models`` once a second to move the progress bars. Without JavaScript the page still
works: reload it to see the progress.
"""

from __future__ import annotations

from typing import Any

import aiohttp_jinja2
from aiohttp import web

from admin_ui.appkeys import db_key, lifecycle_key
from admin_ui.audited import actor_of, audit_event
from admin_ui.background import background
from admin_ui.confirm import confirm_page, confirmed
from admin_ui.flash import done, failed
from admin_ui.runtime_models import loaded_models, model_runtime
from admin_ui.security import require_admin
from proxy.lifecycle.errors import LifecycleError, ModelStateError
from proxy.lifecycle.params import form_params
from proxy.lifecycle.registry import Registry
from proxy.lifecycle.status import model_status, unfit
from proxy.storage.bounds import parse_int
from proxy.storage.errors import StorageError
from proxy.storage.impact import keys_only_for, recent_requests
from proxy.storage.models import KINDS, ModelRecord, check_model_name

routes = web.RouteTableDef()

HERE = "/admin/models"
FORM_NAMES = {  # inputs named otherwise than the field an error names
    "files": "file",
    "run.source_repo": "spec",
    "run.files": "spec",
    "params.n_ctx": "n_ctx",
    "params.n_threads": "n_threads",
    "params.voices": "voices",
}
LABELS = {"pull": "Download", "cancel": "Cancel", "start": "Start", "retry": "Retry", "stop": "Stop", "test": "Test"}


def _registry(request: web.Request) -> Registry:
    return request.app[lifecycle_key].registry


async def _page(request: web.Request) -> web.Response:
    registry = _registry(request)
    loaded = await loaded_models(request)
    context = {
        "models": [model_status(r, loaded) for r in await registry.store.list()],
        "hf_tokens": await registry.tokens.list(),
        "kinds": KINDS,
        "labels": LABELS,
    }
    return aiohttp_jinja2.render_template("models.html", request, context)


def _token_id(form: Any) -> int | None:
    return parse_int("hf_token_id", str(form.get("hf_token_id", "") or ""), low=1)


async def _refused(
    request: web.Request, exc: Exception, form: Any = None, which: str | None = None
) -> web.HTTPSeeOther:
    """Back to the page with the error beside its field (``FORM_NAMES``: a field's input there)."""
    field = getattr(exc, "field", None)
    field = FORM_NAMES.get(f"{which}.{field}", FORM_NAMES.get(field or "", field))
    return await failed(request, f"{HERE}#{which}" if which else HERE, str(exc), field, form, which)


@routes.get("/models")
async def models_page(request: web.Request) -> web.Response:
    return await _page(request)


@routes.post("/models")
async def register_model(request: web.Request) -> web.Response:
    require_admin(request)
    form = await request.post()
    try:
        fields = _register_fields(form)
        record = await _registry(request).add(str(form.get("name", "")).strip(), by=actor_of(request), **fields)
    except (StorageError, LifecycleError) as exc:
        raise await _refused(request, exc, form, "register") from None
    raise await done(request, HERE, f"model {record.name} registered")


def _register_fields(form: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"kind": str(form.get("kind", "llm"))}
    fields.update({k: v for k, v in form_params(form, {}, fields["kind"]).items() if v})
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
    return fields


@routes.post("/models/run")
async def run_model(request: web.Request) -> web.Response:
    """The "Run" button: ``REPO[:FILE]`` registered, downloaded and started (in the background)."""
    require_admin(request)
    form = await request.post()
    spec, name = str(form.get("spec", "")).strip(), str(form.get("name", "")).strip()
    registry = _registry(request)
    try:
        token_id = _token_id(form)
        plan = await registry.plan_run(spec, name or None, token_id)
        extra = {"hf_token_id": token_id} if token_id is not None else {}
        created = await registry.begin_run(plan, by=actor_of(request), **extra)
    except (StorageError, LifecycleError) as exc:
        raise await _refused(request, exc, form, "run") from None
    background(request, lambda: registry.run(plan, forget_on_failure=created), f"running {plan.name}")
    raise await done(request, HERE, f"running {plan.name}: {plan.file} ({plan.reason})")


@routes.get("/models/{name}/remove")
async def confirm_remove(request: web.Request) -> web.Response:
    require_admin(request)
    registry = _registry(request)
    try:
        record = await registry.store.get(check_model_name(request.match_info["name"]))
    except StorageError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    return confirm_page(
        request,
        title=f"Remove the model {record.name}",
        summary="The model is forgotten and unloaded; its downloaded files stay in the shared cache.",
        consequences=await removal_impact(request, record, await registry.store.list()),
        button="Remove the model",
        cancel=HERE,
    )


async def removal_impact(request: web.Request, record: ModelRecord, models: list[ModelRecord]) -> list[str]:
    """What removing ``record`` breaks, in words."""
    said: list[str] = []
    running = [m.name for m in models if m.actual_state == "running"]
    if record.actual_state == "running":
        others = len(running) - 1
        said.append(
            "This is the only running model: every request will fail until another one runs."
            if not others
            else f"It is running now; {others} other model{'s' if others != 1 else ''} keep running."
        )
    used = await recent_requests(request.app[db_key], model=record.name)
    said.append(
        f"{used:,} request{'s' if used != 1 else ''} in the last day went to this model; they get 404 from now on."
    )
    only = await keys_only_for(request.app[db_key], record.name)
    if only:
        said.append(
            f"{len(only)} key{'s' if len(only) != 1 else ''} may use only this model and can do nothing after: "
            + ", ".join(only[:10])
            + ("…" if len(only) > 10 else "")
        )
    return said


@routes.post(r"/models/{name}/{action:(pull|cancel|start|retry|stop|remove)}")
async def model_action(request: web.Request) -> web.Response:
    require_admin(request)
    action, registry = request.match_info["action"], _registry(request)
    try:
        name = check_model_name(request.match_info["name"])
        if action == "remove" and not confirmed(await request.post()):
            raise web.HTTPSeeOther(f"{HERE}/{name}/remove")
        why = unfit(await registry.store.get(name), action)
        if why is not None:  # posted from a page older than the model's state
            raise ModelStateError(why)
        action = "start" if action == "retry" else action
        await _act(request, registry, name, action)
    except (StorageError, LifecycleError) as exc:
        raise await _refused(request, exc) from None
    raise await done(request, HERE, f"model {name}: {DONE[action]}")


DONE = {
    "pull": "downloading",
    "cancel": "download cancelled",
    "start": "starting",
    "stop": "stopping",
    "remove": "removed",
}


@routes.post("/models/{name}/test")
async def test_model(request: web.Request) -> web.Response:
    """One short generation through the runtime; the page says how long it took."""
    require_admin(request)
    try:
        name = check_model_name(request.match_info["name"])
        result = await request.app[lifecycle_key].test(model_runtime(request), name)
    except (StorageError, LifecycleError) as exc:
        raise await _refused(request, exc) from None
    await audit_event(
        request,
        "model.test",
        f"model {name}",
        after={"name": name, "latency_ms": result.latency_ms, "tokens": result.completion_tokens},
    )
    first = "" if result.first_text_ms is None else f", first text after {result.first_text_ms:,.0f} ms"
    said = f"model {name} answered in {result.latency_ms:,.0f} ms ({result.completion_tokens} tokens{first})"
    raise await done(request, HERE, said, test={"text": result.text[:300]})


async def _edited(request: web.Request) -> ModelRecord:
    """The model the edit page is about (404 for a bad or unknown name)."""
    require_admin(request)
    try:
        return await _registry(request).store.get(check_model_name(request.match_info["name"]))
    except StorageError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None


@routes.get("/models/{name}/edit")
async def edit_page(request: web.Request) -> web.Response:
    context = {"m": await _edited(request), "hf_tokens": await _registry(request).tokens.list()}
    return aiohttp_jinja2.render_template("model_edit.html", request, context)


@routes.post("/models/{name}/edit")
async def edit_model(request: web.Request) -> web.Response:
    """The edit form: parameters, keep-alive, voices, token; a refused form comes back filled in."""
    before = await _edited(request)
    name, form = before.name, await request.post()
    try:
        fields = form_params(form, before.params, before.kind)
        fields["hf_token_id"] = _token_id(form)
        record = await _registry(request).set_fields(name, by=actor_of(request), **fields)
    except (StorageError, LifecycleError) as exc:
        field = getattr(exc, "field", None)
        back = f"{HERE}/{name}/edit"
        raise await failed(request, back, str(exc), FORM_NAMES.get(field or "", field), form, "edit") from None
    changed = {k: v for k, v in fields.items() if getattr(before, k) != getattr(record, k)}
    reload = "params" in changed and record.actual_state == "running"
    applies = " (it is loaded again with the new parameters)" if reload else ""
    raise await done(request, HERE, f"model {name} saved{applies}")


async def _act(request: web.Request, registry: Registry, name: str, action: str) -> None:
    by = actor_of(request)
    if action == "pull":
        await registry.store.get(name)
        background(request, lambda: registry.pull(name, by=by), f"downloading {name}")
    elif action == "cancel":
        if not await registry.cancel_pull(name, by=by):
            raise ModelStateError(f"no download of {name!r} is running")
    elif action == "remove":
        await registry.remove(name, by=by)
    else:
        await (registry.start(name, by=by) if action == "start" else registry.stop(name, by=by))
