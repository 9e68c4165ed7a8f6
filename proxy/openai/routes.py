"""The OpenAI routes of the proxy, one module per endpoint family; each handler reads as
parse -> call -> respond."""

from __future__ import annotations

from aiohttp import web

from proxy.openai import chat, completions, embeddings, extras, models


def setup_routes(app: web.Application) -> None:
    app.router.add_post(chat.PATH, chat.chat_completions)
    app.router.add_post(completions.PATH, completions.completions)
    app.router.add_post(embeddings.PATH, embeddings.embeddings)
    app.router.add_post("/extras/tokenize", extras.tokenize)
    app.router.add_post("/extras/tokenize/count", extras.tokenize_count)
    app.router.add_post("/extras/detokenize", extras.detokenize)
    app.router.add_get("/v1/models", models.list_models)
    app.router.add_get("/v1/models/{model_id:.+}", models.get_model)
