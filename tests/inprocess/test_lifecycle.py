"""The model lifecycle in-process: the reconciler drives the scripted runtime as it drives the daemon.

issue 20: the fake runtime answers ``hello``, ``load`` and ``unload`` too, so ``create_app`` runs the
same reconciler for it as for the real daemon (the ``reconcile=`` switch is gone); what the registry
says should run is loaded, served, unloaded when stopped, and loaded again after a runtime restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from proxy.appkeys import lifecycle_key
from proxy.lifecycle.registry import Registry
from tests.inprocess.conftest import InProcess


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def registry(app: InProcess) -> Registry:
    return app.server.app[lifecycle_key].registry


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {within} s: {what}")


@pytest.mark.asyncio
async def test_the_registry_drives_the_runtime_in_process(app: InProcess) -> None:
    await registry(app).add("second", local_path="/models/second.gguf", backend="llamacpp", params={"n_ctx": 1024})
    await registry(app).start("second")
    await until(lambda: "second" in app.runtime.scripts, "the reconciler loaded the started model")
    (config,) = [c for c in app.runtime.loads if c.name == "second"]
    assert (config.backend, config.path, config.params) == ("llamacpp", "/models/second.gguf", {"n_ctx": 1024})

    key, _ = await app.key()
    headers = {"Authorization": f"Bearer {key}"}
    r = await app.http.post("/v1/chat/completions", json=chat("second"), headers=headers)
    assert r.status == 200, await r.text()
    assert (await registry(app).store.get("second")).actual_state == "running"

    await registry(app).stop("second")
    await until(lambda: "second" not in app.runtime.scripts, "the reconciler unloaded the stopped model")

    app.runtime.restart()  # a new boot id and nothing loaded: what should run is loaded again
    await until(lambda: "fake" in app.runtime.scripts, "the model wanted running loaded after the restart")
    assert "second" not in app.runtime.scripts
