"""Chat messages -> the one input an RKLLM run takes: a role, a text, maybe a system template.

The ``.rkllm`` file carries its model's chat template; ``rkllm_run`` wraps the
text it is given as one turn of the given role ("user" or "tool") and adds the
assistant prefix. There is no way to pass earlier assistant turns, so:

* System messages (``system`` / ``developer``) are joined with blank lines.
  Without a configured template they are put before the text, separated by a
  blank line. With one (``system_template``, ``prompt_prefix``,
  ``prompt_postfix``), the system text goes through ``rkllm_set_chat_template``,
  where the model expects it; ``system_prompt`` is used when a request has none.
* The last non-system message must come from the user or a tool; its role is the
  run's role.
* Earlier turns become a transcript inside that turn (``User: ...`` /
  ``Assistant: ...`` lines). It is an approximation of the model's own
  multi-turn format, and the only stateless one RKLLM allows.
* A raw ``prompt`` (completions) is sent as one user turn: RKLLM always
  applies the chat template.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.api.protocol import ERR_BAD_REQUEST, GenerateSpec
from runtime.backends.base import BackendError
from runtime.backends.rkllm.settings import ChatTemplate

SYSTEM_ROLES = frozenset({"system", "developer"})
INPUT_ROLES = frozenset({"user", "tool"})


@dataclass(frozen=True)
class Turn:
    """One run's input."""

    role: str  # RKLLMInput.role
    text: str  # RKLLMInput.prompt_input
    template: tuple[str, str, str] | None  # for rkllm_set_chat_template; None = the model's own


def build_turn(spec: GenerateSpec, template: ChatTemplate | None, default_system: str = "") -> Turn:
    if spec.messages is None:
        return _turn("user", spec.prompt or "", default_system, template)
    system = "\n\n".join(m["content"] for m in spec.messages if m["role"] in SYSTEM_ROLES)
    rest = [m for m in spec.messages if m["role"] not in SYSTEM_ROLES]
    if not rest:
        raise BackendError("the messages hold no user message", code=ERR_BAD_REQUEST)
    last = rest[-1]
    if last["role"] not in INPUT_ROLES:
        raise BackendError(
            f"the last message must come from the user or a tool, not {last['role']!r}",
            code=ERR_BAD_REQUEST,
        )
    if len(rest) == 1:
        text = last["content"]
    else:
        text = "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in rest)
    return _turn(last["role"], text, system or default_system, template)


def _turn(role: str, text: str, system: str, template: ChatTemplate | None) -> Turn:
    if "\x00" in text or "\x00" in system:
        raise BackendError("the prompt contains a NUL character", code=ERR_BAD_REQUEST)
    if template is not None:
        return Turn(role, text, template.render(system))
    return Turn(role, f"{system}\n\n{text}" if system else text, None)
