"""``/admin/api/models``: register, download, start, stop and remove models; read their state.

Every handler reads as auth -> parse -> call the registry -> respond. A download (``pull`` or
``run``) answers 202 at once and runs on in the background; its progress is on the model's row
(``download_state``, ``download_progress``, ``downloaded_bytes``, ``total_bytes``), which
``GET /admin/api/models/{name}`` returns, and ``.../cancel`` stops it.

=======  ==================================  ===========================================
GET      /admin/api/models                   every model
POST     /admin/api/models                   register (``{"name", "source_repo"|"local_path", ...}``)
POST     /admin/api/models/run               ``{"spec": "REPO[:FILE]"}``: register, download, start
GET      /admin/api/models/{name}            one model (with progress and last error)
PATCH    /admin/api/models/{name}            params, keep_alive, hf_token_id...
DELETE   /admin/api/models/{name}            forget (unloaded by the reconciler)
POST     /admin/api/models/{name}/pull       download (202)
POST     /admin/api/models/{name}/cancel     cancel a running download
POST     /admin/api/models/{name}/start      want it running
POST     /admin/api/models/{name}/stop       want it stopped
POST     /admin/api/models/{name}/test       one short generation, timed (an admin action)
=======  ==================================  ===========================================

A model's JSON carries what the console adds to its row (``proxy.lifecycle.status``): the
``actions`` that fit its state, ``disk_bytes``, ``memory_bytes`` when loaded (from the runtime, which
is asked with a short wait; without an answer the figure is null) and ``error_short``. ``test``
answers the latency and the text (``proxy.lifecycle.trial``: bounded, one at a time per model,
audited, billed to no key).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from admin_ui.api.common import FLAG, NULL, TEXT, Auth, error, guard, install_auth, read_body, translate
from admin_ui.appkeys import lifecycle_key
from admin_ui.audited import audit_event
from admin_ui.background import background, setup_background
from admin_ui.runtime_models import loaded_models, model_runtime, model_runtime_key
from proxy.lifecycle.errors import LifecycleError
from proxy.lifecycle.registry import Registry
from proxy.lifecycle.service import Lifecycle
from proxy.lifecycle.status import model_status
from proxy.lifecycle.trial import ModelRuntime
from proxy.storage.errors import StorageError
from proxy.storage.models import check_model_name

log = logging.getLogger(__name__)

OPTIONAL_TEXT, LIST, OBJECT = (str, NULL), (list, NULL), (dict, NULL)
OPTIONAL_ID, SECONDS = (int, NULL), (int, float, NULL)
CHANGE: dict[str, tuple[type, ...]] = {
    "backend": TEXT,
    "files": LIST,
    "patterns": LIST,
    "revision": OPTIONAL_TEXT,
    "local_path": OPTIONAL_TEXT,
}
CHANGE |= {"params": OBJECT, "hf_token_id": OPTIONAL_ID, "keep_alive": SECONDS}
ADD: dict[str, tuple[type, ...]] = {"name": TEXT, "start": FLAG, "kind": TEXT, "source_repo": OPTIONAL_TEXT, **CHANGE}
RUN: dict[str, tuple[type, ...]] = {
    "spec": TEXT,
    "name": OPTIONAL_TEXT,
    "params": OBJECT,
    "keep_alive": SECONDS,
    "hf_token_id": OPTIONAL_ID,
}


def setup_model_routes(
    app: web.Application,
    lifecycle: Lifecycle,
    *,
    auth: Auth,
    runtime: Callable[[], ModelRuntime] | None = None,
    prefix: str = "/admin/api",
) -> None:
    """Add the routes under ``prefix`` (``/api`` in a sub-application mounted at ``/admin``);
    ``runtime`` gives the runtime client (memory figures, the test), once it is open."""
    app[lifecycle_key] = lifecycle
    if runtime is not None:
        app[model_runtime_key] = runtime
    install_auth(app, auth)
    setup_background(app)
    base = f"{prefix}/models"
    app.router.add_get(base, list_models)
    app.router.add_post(base, add_model)
    app.router.add_post(f"{base}/run", run_model)
    app.router.add_get(base + "/{name}", get_model)
    app.router.add_patch(base + "/{name}", change_model)
    app.router.add_delete(base + "/{name}", remove_model)
    for action in ("pull", "cancel", "start", "stop"):
        app.router.add_post(base + "/{name}/" + action, model_action)
    app.router.add_post(base + "/{name}/test", test_model)


def _registry(request: web.Request) -> Registry:
    return request.app[lifecycle_key].registry


def _name(request: web.Request) -> str:
    try:
        return check_model_name(request.match_info["name"])
    except StorageError as exc:
        raise translate(exc) from None


async def _call(work: Awaitable[Any]) -> Any:
    try:
        return await work
    except (StorageError, LifecycleError) as exc:
        raise translate(exc) from None


async def list_models(request: web.Request) -> web.Response:
    await guard(request)
    records = await _call(_registry(request).store.list())
    loaded = await loaded_models(request)
    return web.json_response({"models": [model_status(r, loaded) for r in records]})


async def get_model(request: web.Request) -> web.Response:
    await guard(request)
    record = await _call(_registry(request).store.get(_name(request)))
    return web.json_response(model_status(record, await loaded_models(request)))


async def test_model(request: web.Request) -> web.Response:
    """One short generation through the runtime with its latency (bounded; see ``trial``)."""
    await guard(request)
    name = _name(request)
    result = await _call(request.app[lifecycle_key].test(model_runtime(request), name))
    after = {"latency_ms": result.latency_ms, "tokens": result.completion_tokens}
    await audit_event(request, "model.test", f"model {name}", after=after)
    return web.json_response(result.to_json())


async def add_model(request: web.Request) -> web.Response:
    by = await guard(request)
    body = await read_body(request, ADD, required=("name",))
    name = body.pop("name")
    start = bool(body.pop("start", False))
    registry = _registry(request)
    record = await _call(registry.add(name, by=by, **body))
    if start and record.local_path:
        record = await _call(registry.start(record.name, by=by))
    return web.json_response(record.to_json(), status=201)


async def change_model(request: web.Request) -> web.Response:
    by = await guard(request)
    body = await read_body(request, CHANGE)
    record = await _call(_registry(request).set_fields(_name(request), by=by, **body))
    return web.json_response(record.to_json())


async def remove_model(request: web.Request) -> web.Response:
    by = await guard(request)
    name = _name(request)
    await _call(_registry(request).remove(name, by=by))
    return web.Response(status=204)


async def model_action(request: web.Request) -> web.Response:
    by = await guard(request)
    name, action = _name(request), request.path.rsplit("/", 1)[-1]
    registry = _registry(request)
    if action == "pull":
        record = await _call(registry.store.get(name))
        background(request, lambda: registry.pull(name, by=by), f"downloading {name}")
        return web.json_response(record.to_json(), status=202)
    if action == "cancel":
        if not await registry.cancel_pull(name, by=by):
            raise error(409, f"no download of {name!r} is running", "conflict")
        return web.json_response({"name": name, "cancelling": True}, status=202)
    record = await _call(registry.start(name, by=by) if action == "start" else registry.stop(name, by=by))
    return web.json_response(record.to_json())


async def run_model(request: web.Request) -> web.Response:
    by = await guard(request)
    body = await read_body(request, RUN, required=("spec",))
    spec = body["spec"]
    if not spec:
        raise error(400, "'spec' must be REPO or REPO:FILE", "invalid_request")
    token_id = body.get("hf_token_id")
    registry = _registry(request)
    plan = await _call(registry.plan_run(spec, body.get("name"), token_id))
    fields = {k: body[k] for k in ("params", "keep_alive", "hf_token_id") if body.get(k) is not None}
    created = await _call(registry.begin_run(plan, by=by, **fields))
    background(request, lambda: registry.run(plan, forget_on_failure=created), f"running {plan.name}")
    answer = {"name": plan.name, "repo": plan.repo, "file": plan.file, "reason": plan.reason}
    return web.json_response(answer, status=202)
