"""Parse ``NAME=BACKEND:PATH[,key=value...]`` model specifications."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runtime.api.errors import ModelSpecError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def parse_model_spec(spec: str) -> ModelConfig:
    """``smollm=llamacpp:/models/a.gguf,n_ctx=2048`` -> ModelConfig."""
    name, sep, rest = spec.partition("=")
    if not sep or not _NAME.match(name):
        raise ModelSpecError(f"model spec {spec!r}: expected NAME=BACKEND:PATH[,key=value...]")
    backend, sep, rest = rest.partition(":")
    if not sep or not backend:
        raise ModelSpecError(f"model spec {spec!r}: missing BACKEND: before the path")
    path, *pairs = rest.split(",")
    if not path:
        raise ModelSpecError(f"model spec {spec!r}: missing model path")
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ModelSpecError(f"model spec {spec!r}: {pair!r} is not key=value")
        params[key.strip()] = coerce_value(value.strip())
    return ModelConfig(name=name, backend=backend, path=path, params=params)


def check_model_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelSpecError(f"invalid model name {name!r}")
    return name


def model_config_from_wire(body: dict[str, Any]) -> ModelConfig:
    """Validate a ``load`` request's model fields."""
    name = check_model_name(body.get("name"))
    backend, path, params = body.get("backend"), body.get("path"), body.get("params") or {}
    if not isinstance(backend, str) or not backend:
        raise ModelSpecError("'backend' must be a non-empty string")
    if not isinstance(path, str) or not path:
        raise ModelSpecError("'path' must be a non-empty string")
    if not isinstance(params, dict):
        raise ModelSpecError("'params' must be an object")
    return ModelConfig(name=name, backend=backend, path=path, params=dict(params))


def coerce_value(value: str) -> Any:
    low = value.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@dataclass(frozen=True)
class ModelConfig:
    """One model to load: a name, a backend, a path and backend parameters."""

    name: str
    backend: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "path": self.path, "params": self.params}
