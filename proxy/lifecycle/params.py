"""The model parameters an admin sets in the console's forms, and their bounds (issue 19).

A model's ``params`` go to the runtime as they are, and which names a backend knows is the
runtime's to say when it loads the model (``llmserver models set`` and the admin API can set any).
The few that the console's forms offer are checked here, at the edge, for every caller (the
registry calls :func:`check_model_params` on add and on change), so a context of ``-5`` or a thread
count of ``"many"`` is a 400 naming ``params.n_ctx`` instead of a load that fails later:

- ``n_ctx`` (context length in tokens; 0: the length the model was trained for) and ``n_threads``:
  llama.cpp's; an ``rkllm`` model calls them ``max_context_len`` and ``enabled_cpus_num``;
- ``voices``: the voices a speech (``tts``) model accepts, a list of names (or ``a,b,c``);
- ``keep_alive`` (a column beside ``params``): seconds unused before the model is unloaded.

:func:`form_params` reads those fields from a submitted form into the fields the registry takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.storage.bounds import MAX_SECONDS, check_int, check_number, parse_int
from proxy.storage.errors import ValidationError

MAX_CONTEXT = 1 << 20  # tokens; llama.cpp refuses what the model cannot hold in its own words
MAX_THREADS = 1024
MAX_VOICES = 64
# name -> (low, high, the backends it belongs to)
NUMBERS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "n_ctx": (0, MAX_CONTEXT, ("llamacpp",)),
    "n_threads": (1, MAX_THREADS, ("llamacpp",)),
}
RKLLM_NAMES = {"n_ctx": "max_context_len", "n_threads": "enabled_cpus_num"}
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_model_params(params: Mapping[str, Any], backend: str, kind: str) -> None:
    """Raise :class:`ValidationError` naming ``params.NAME`` for a bad value of a known parameter."""
    for name, (low, high, backends) in NUMBERS.items():
        if name not in params or params[name] is None:
            continue
        field = f"params.{name}"
        if backend not in backends:
            other = RKLLM_NAMES.get(name) if backend == "rkllm" else None
            instead = f"; an rkllm model's is {other}" if other else ""
            raise ValidationError(f"{name} is a parameter of {', '.join(backends)} models{instead}", field=field)
        check_int(field, params[name], low=low, high=high)
    if "voices" in params and params["voices"] is not None:
        if kind != "tts":
            raise ValidationError("voices are for speech (tts) models", field="params.voices")
        check_voices(params["voices"])


def check_voices(value: object) -> list[str]:
    """A list of voice names (or ``a,b,c``): letters, digits, ``.``, ``_``, ``-``; at least one."""
    field = "params.voices"
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or len(items) > MAX_VOICES:
        raise ValidationError(f"voices: 1 to {MAX_VOICES} names, separated by commas", field=field)
    for item in items:
        if not isinstance(item, str) or not _VOICE.match(item):
            shown = repr(item)[:70]
            raise ValidationError(f"voices: {shown} is not a voice name (letters, digits, . _ -)", field=field)
    return list(items)


def form_params(form: Mapping[str, Any], current: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``params`` and ``keep_alive`` from a form's ``n_ctx``, ``n_threads``, ``voices`` and
    ``keep_alive`` fields, over ``current`` (a blank field drops the parameter: the default again;
    the parameters the form does not show are kept)."""
    params = dict(current)
    for name, (low, high, _backends) in NUMBERS.items():
        if name in form:
            value = parse_int(f"params.{name}", str(form.get(name) or ""), low=low, high=high)
            _put(params, name, value)
    if "voices" in form:
        text = str(form.get("voices") or "").strip()
        _put(params, "voices", check_voices(text) if text and kind == "tts" else (text or None))
    fields: dict[str, Any] = {"params": params}
    if "keep_alive" in form:
        fields["keep_alive"] = parse_keep_alive(str(form.get("keep_alive") or ""))
    return fields


def parse_keep_alive(text: str) -> float | None:
    """Seconds (``300``, ``1.5``); blank: kept loaded (no keep-alive)."""
    text = text.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        why = "keep-alive must be a number of seconds (blank: kept loaded)"
        raise ValidationError(why, field="keep_alive") from None
    return check_number("keep_alive", seconds, low=0.0, high=MAX_SECONDS, low_open=True)


def _put(params: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        params.pop(name, None)
    else:
        params[name] = value
