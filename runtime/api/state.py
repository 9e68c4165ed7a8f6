"""What the daemon reports about itself and its models, as typed values.

The ``models`` and ``hello`` answers and a ``load``'s result carry model entries; the daemon builds
them as :class:`ModelState` (``to_wire``) and the client reads them back (``from_wire``), so the
field names live in one place. Reading is lenient: a missing or mistyped field takes its default,
since a daemon of another version may add or omit some.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

READY, LOADING, FAILED, UNLOADING = "ready", "loading", "failed", "unloading"


@dataclass(frozen=True)
class ModelState:
    """One model held by the daemon: its configuration, its state and its queue."""

    name: str
    backend: str = ""
    state: str = ""  # READY, LOADING, FAILED or UNLOADING
    path: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    queued: int = 0  # requests waiting in its queue
    queue_depth: int = 0  # how many may wait
    running: bool = False  # a request is running now
    served: int = 0
    warm_ms: float | None = None
    context: int | None = None  # the model's context length in its own tokens, once loaded
    kind: str = "llm"  # llm, embedding, tts or stt (``runtime.backends.base.BACKEND_KINDS``)
    memory_bytes: int | None = None  # what the loaded model holds in memory, when its backend can say
    info: dict[str, Any] = field(default_factory=dict)  # the backend's own figures (voices, languages...)

    @property
    def busy(self) -> bool:
        """Whether a request is running or waiting."""
        return self.running or self.queued > 0

    def to_wire(self) -> dict[str, Any]:
        """The entry on the wire: the backend's own figures sit beside the common fields."""
        body = asdict(self)
        info = body.pop("info")
        return {**{k: v for k, v in info.items() if k not in body}, **body}

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> ModelState:
        params = body.get("params")
        error = body.get("error")
        return cls(
            name=str(body.get("name", "")),
            backend=str(body.get("backend") or ""),
            kind=str(body.get("kind") or "llm"),
            state=str(body.get("state") or ""),
            path=str(body.get("path") or ""),
            params=dict(params) if isinstance(params, dict) else {},
            error=None if error is None else str(error),
            queued=_count(body.get("queued")),
            queue_depth=_count(body.get("queue_depth")),
            running=bool(body.get("running")),
            served=_count(body.get("served")),
            warm_ms=_number(body.get("warm_ms")),
            context=_count(body.get("context")) or None,
            memory_bytes=_count(body.get("memory_bytes")) or None,
            info={k: v for k, v in body.items() if k not in _FIELDS},
        )


@dataclass(frozen=True)
class Hello:
    """The daemon's ``hello``: who it is (a new ``boot_id`` after each start) and what it holds."""

    protocol: int
    version: str
    boot_id: str
    pid: int
    active: int  # generations queued or running over all models
    models: tuple[ModelState, ...]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Hello:
        models = body.get("models")
        return cls(
            protocol=_count(body.get("protocol")),
            version=str(body.get("version", "")),
            boot_id=str(body.get("boot_id", "")),
            pid=_count(body.get("pid")),
            active=_count(body.get("active")),
            models=tuple(ModelState.from_wire(m) for m in models if isinstance(m, dict))
            if isinstance(models, list)
            else (),
        )


_FIELDS = frozenset(ModelState.__dataclass_fields__)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
