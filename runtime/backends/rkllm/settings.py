"""An RKLLM model's ``key=value`` parameters, checked once into one typed object.

Every parameter is documented in ``docs/rkllm.md``; a test keeps the two in step.
Parameters left out keep the value ``rkllm_createDefaultParam`` gives, except
the ones with a default below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.backends.base import BackendError

# target_platform -> (enabled_cpus_mask, enabled_cpus_num): the four big cores, CPU4-CPU7,
# on both SoCs (RK3588: 4x A76 + 4x A55; RK3576: 4x A72 + 4x A53), as Rockchip's demos do.
PLATFORMS: dict[str, tuple[int, int]] = {"rk3588": (0xF0, 4), "rk3576": (0xF0, 4)}


@dataclass(frozen=True)
class ChatTemplate:
    """The model's template, for ``rkllm_set_chat_template``; ``{system}`` marks the system text."""

    system: str
    prefix: str
    postfix: str

    def render(self, system_text: str) -> tuple[str, str, str]:
        block = self.system.replace("{system}", system_text) if system_text else ""
        return block, self.prefix, self.postfix


@dataclass(frozen=True)
class RKLLMSettings:
    # Init-time values (RKLLMParam); None = the library's default.
    max_context_len: int | None = None
    max_new_tokens: int | None = None
    n_keep: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    temperature: float | None = None
    repeat_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    skip_special_token: bool = True
    ignore_eos_token: bool | None = None  # layout 1.3 only
    # RKLLMExtendParam
    target_platform: str = "rk3588"
    enabled_cpus_mask: int | None = None  # None = from target_platform
    enabled_cpus_num: int | None = None
    embed_flash: bool = True
    base_domain_id: int | None = None  # None = the lowest free one
    # The binding
    layout: str | None = None  # "1.2" / "1.3"; None = from the library's version
    library: str | None = None  # path of librkllmrt.so; None = $LLMSERVER_RKLLM_LIBRARY or the default
    # Each run
    enable_thinking: bool = False
    system_prompt: str = ""
    embedding: bool = False  # serve /v1/embeddings (last-hidden-layer runs)
    template: ChatTemplate | None = field(default=None)

    @property
    def cpus(self) -> tuple[int, int]:
        mask, num = PLATFORMS[self.target_platform]
        return (
            mask if self.enabled_cpus_mask is None else self.enabled_cpus_mask,
            num if self.enabled_cpus_num is None else self.enabled_cpus_num,
        )


def _int(name: str, v: Any) -> int:
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, int):
        raise BackendError(f"parameter {name} must be an integer, got {v!r}")
    return v


def _float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BackendError(f"parameter {name} must be a number, got {v!r}")
    return float(v)


def _bool(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise BackendError(f"parameter {name} must be true or false, got {v!r}")
    return v


def _str(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise BackendError(f"parameter {name} must be a string, got {v!r}")
    return v.replace("\\n", "\n").replace("\\t", "\t")


def _layout(name: str, v: Any) -> str:
    text = str(v)  # "--model ...,layout=1.2" arrives as the float 1.2
    if text not in ("1.2", "1.3"):
        raise BackendError(f"parameter {name} must be 1.2 or 1.3, got {v!r}")
    return text


def _platform(name: str, v: Any) -> str:
    text = str(v).lower()
    if text not in PLATFORMS:
        raise BackendError(f"parameter {name} must be one of {', '.join(PLATFORMS)}, got {v!r}")
    return text


def _range(check: Callable[[str, Any], Any], lo: float, hi: float) -> Callable[[str, Any], Any]:
    def checked(name: str, v: Any) -> Any:
        value = check(name, v)
        if not lo <= value <= hi:
            raise BackendError(f"parameter {name} must be in [{lo:g}, {hi:g}], got {v!r}")
        return value

    return checked


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "max_context_len": _range(_int, 1, 1 << 20),
    "max_new_tokens": _range(_int, -1, 1 << 20),
    "n_keep": _range(_int, -1, 1 << 20),
    "top_k": _range(_int, 0, 1 << 20),
    "top_p": _range(_float, 0.0, 1.0),
    "temperature": _range(_float, 0.0, 10.0),
    "repeat_penalty": _range(_float, 0.0, 10.0),
    "frequency_penalty": _range(_float, -10.0, 10.0),
    "presence_penalty": _range(_float, -10.0, 10.0),
    "mirostat": _range(_int, 0, 2),
    "mirostat_tau": _float,
    "mirostat_eta": _float,
    "skip_special_token": _bool,
    "ignore_eos_token": _bool,
    "target_platform": _platform,
    "enabled_cpus_mask": _range(_int, 1, 0xFF),
    "enabled_cpus_num": _range(_int, 1, 8),
    "embed_flash": _bool,
    "base_domain_id": _int,
    "layout": _layout,
    "library": _str,
    "enable_thinking": _bool,
    "embedding": _bool,
    "system_prompt": _str,
    "system_template": _str,
    "prompt_prefix": _str,
    "prompt_postfix": _str,
}
_TEMPLATE_KEYS = ("system_template", "prompt_prefix", "prompt_postfix")

KNOWN_PARAMS = frozenset(_PARSERS)


def parse_settings(params: Mapping[str, Any]) -> RKLLMSettings:
    """Check ``params`` (from ``--model`` or a load request); BackendError names the bad one."""
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise BackendError(f"unknown rkllm parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_PARAMS))}")
    values = {key: _PARSERS[key](key, value) for key, value in params.items()}
    parts = [values.pop(key, None) for key in _TEMPLATE_KEYS]
    template = None
    if any(p is not None for p in parts):
        if any(p is None for p in parts):
            raise BackendError(f"set all of {', '.join(_TEMPLATE_KEYS)} or none of them")
        system, prefix, postfix = parts
        if "{system}" not in system:
            raise BackendError("system_template must contain {system} where the system text goes")
        template = ChatTemplate(system, prefix, postfix)
    return RKLLMSettings(template=template, **values)
