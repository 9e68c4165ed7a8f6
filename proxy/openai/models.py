"""``GET /v1/models`` and ``GET /v1/models/{id}``, filtered to what the key may use."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.appkeys import api_key_key, catalog_key
from proxy.errors import ApiError


async def list_models(request: web.Request) -> web.Response:
    key = request[api_key_key]
    models = await request.app[catalog_key].models()
    data = [_model_object(m.id, m.created) for m in models.values() if key.allows_model(m.id)]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    key, name = request[api_key_key], request.match_info["model_id"]
    models = await request.app[catalog_key].models()
    if name not in models or not key.allows_model(name):
        raise ApiError(404, f"The model '{name}' does not exist", code="model_not_found", param="model")
    return web.json_response(_model_object(name, models[name].created))


def _model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "llmserver"}
