"""The runtime as the console's model pages and API see it: its models' figures and the test.

The console is handed a way to reach the runtime client (``setup_model_routes(runtime=...)``) once
the client is open; the model list asks it with a short wait, so a slow or absent runtime leaves the
figures (memory) empty instead of holding the page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from proxy.lifecycle.errors import ModelStateError
from proxy.lifecycle.trial import ModelRuntime
from runtime.api.errors import RuntimeClientError

log = logging.getLogger(__name__)

model_runtime_key: web.AppKey[Callable[[], ModelRuntime]] = web.AppKey("admin_model_runtime")
RUNTIME_WAIT = 1.0  # seconds the model list waits for the runtime's memory figures


def model_runtime(request: web.Request) -> ModelRuntime:
    provider = request.app.get(model_runtime_key)
    if provider is None:
        raise ModelStateError("this console has no runtime to ask")
    return provider()


async def loaded_models(request: web.Request) -> dict[str, dict[str, Any]]:
    """The runtime's models by name (state, memory), or nothing when it does not answer at once."""
    if model_runtime_key not in request.app:
        return {}
    try:
        models = await asyncio.wait_for(request.app[model_runtime_key]().models(), RUNTIME_WAIT)
    except (RuntimeClientError, OSError, asyncio.TimeoutError) as exc:
        log.debug("model list without the runtime's figures: %s", exc)
        return {}
    return {m.name: m.to_wire() for m in models}
