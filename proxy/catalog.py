"""The models the runtime serves, as the proxy sees them (cached for a second)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from runtime.client import RuntimeClient


@dataclass(frozen=True)
class ModelInfo:
    id: str
    backend: str
    state: str
    created: int


class ModelCatalog:
    def __init__(self, runtime: RuntimeClient, ttl: float = 1.0) -> None:
        self._runtime = runtime
        self._ttl = ttl
        self._models: dict[str, ModelInfo] = {}
        self._fetched = 0.0
        self._created = int(time.time())

    async def models(self) -> dict[str, ModelInfo]:
        """Ready models by name. Raises the runtime client's errors when it is unreachable."""
        now = time.monotonic()
        if now - self._fetched > self._ttl:
            listed = await self._runtime.models()
            self._models = {
                m["name"]: ModelInfo(m["name"], m["backend"], m["state"], self._created)
                for m in listed
                if m.get("state") == "ready"
            }
            self._fetched = now
        return self._models

    async def has(self, name: str) -> bool:
        if name in self._models and time.monotonic() - self._fetched <= self._ttl:
            return True
        return name in await self.models()

    def invalidate(self) -> None:
        self._fetched = 0.0
