"""``GET /v1/models`` and ``GET /v1/models/{id}``, filtered to what the key may use."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from proxy.appkeys import api_key_key, catalog_key
from proxy.errors import ApiError
from proxy.upstream import ModelInfo


async def list_models(request: web.Request) -> web.Response:
    key = request[api_key_key]
    models = await request.app[catalog_key].models()
    return web.Response(body=_listing(models, key.allowed_models), content_type="application/json")


_listings: dict[tuple[int, tuple[str, ...] | None], tuple[dict[str, ModelInfo], bytes]] = {}


def _listing(models: dict[str, ModelInfo], allowed: tuple[str, ...] | None) -> bytes:
    """The list's JSON for one catalog snapshot and one key's allow-list, made once per snapshot: a
    client polling ``/v1/models`` should not pay a JSON encoding per call. (The catalog replaces its
    dict when it refreshes, so the snapshot's identity is the cache key; the entry keeps the dict
    alive, so its id cannot be reused while cached.)"""
    cache_key = (id(models), allowed)
    cached = _listings.get(cache_key)
    if cached is not None and cached[0] is models:
        return cached[1]
    data = [_model_object(m.id, m.created) for m in models.values() if allowed is None or m.id in allowed]
    body = json.dumps({"object": "list", "data": data}).encode()
    if len(_listings) >= 64:  # old snapshots and allow-lists: start afresh
        _listings.clear()
    _listings[cache_key] = (models, body)
    return body


async def get_model(request: web.Request) -> web.Response:
    key, name = request[api_key_key], request.match_info["model_id"]
    models = await request.app[catalog_key].models()
    if name not in models or not key.allows_model(name):
        raise ApiError(404, f"The model '{name}' does not exist", code="model_not_found", param="model")
    return web.json_response(_model_object(name, models[name].created))


def _model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llmserver"}
