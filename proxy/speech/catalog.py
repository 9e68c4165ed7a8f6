"""Which speech models exist, and with what token to reach them: the one thing speech asks of the
model registry.

:class:`SpeechCatalog` is the interface the endpoints use. :class:`RegistryCatalog` implements it
over the registry's own API, the same one the lifecycle, the CLI and the console use:

- :class:`~proxy.storage.models.ModelStore`: a row of kind ``tts``/``stt`` (``llm`` rows are not
  speech models) gives ``source_repo`` (the Hugging Face repository the inference service runs),
  ``desired_state`` (``running`` = served; the model is remote, so starting it only marks it so),
  ``hf_token_id`` (the model's own stored token) and ``params`` (``voices`` lists the voices a TTS
  model accepts: a list, or a comma-separated string).
- :class:`~proxy.storage.hf_tokens.TokenStore`: ``reveal(hf_token_id)`` decrypts the model's token,
  or the default token when the model names none (AES-GCM with the row id as associated data, so a
  ciphertext moved to another row does not decrypt). With no token stored the call goes out without
  one, and the inference service's refusal says the rest. A token that is stored but cannot be read
  (no encryption key, or another key than the vault's) is never replaced by an anonymous call: the
  model carries the problem and the call fails with it (issue 25).

The plaintext token lives in the returned :class:`SpeechModel` only, in memory, for one request; its
``repr`` hides it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from proxy.storage.errors import TokenNotFoundError, VaultError
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import ModelStore

log = logging.getLogger(__name__)

SPEECH_KINDS = ("tts", "stt")
KIND_NAMES = {"tts": "text-to-speech (tts)", "stt": "speech-to-text (stt)"}


@dataclass(frozen=True)
class SpeechModel:
    """A registered speech model as one request needs it."""

    name: str
    kind: str  # "tts" or "stt"
    repo: str  # the Hugging Face repository id the inference service serves
    running: bool
    token: str | None = field(default=None, repr=False)
    token_problem: str | None = None  # a stored token that cannot be decrypted: the call must not go out
    voices: tuple[str, ...] | None = None  # the voices a TTS model accepts; None: OpenAI's names


class SpeechCatalog(Protocol):
    """The speech models the proxy can serve."""

    async def resolve(self, name: str) -> SpeechModel | None:
        """The model called ``name`` if it is a registered speech model, else None."""
        ...


class RegistryCatalog:
    """:class:`SpeechCatalog` over the model registry and the token vault."""

    def __init__(self, models: ModelStore, tokens: TokenStore, *, keyed: bool) -> None:
        self._models = models
        self._tokens = tokens
        self._keyed = keyed  # LLMSERVER_ENCRYPTION_KEY is set: stored tokens can be read

    async def resolve(self, name: str) -> SpeechModel | None:
        record = await self._models.find(name)  # None too for a name the registry would refuse
        if record is None or record.kind not in SPEECH_KINDS:
            return None
        token, problem = await self._token(record.name, record.hf_token_id)
        return SpeechModel(
            name=record.name,
            kind=record.kind,
            repo=record.source_repo or record.name,
            running=record.desired_state == "running",
            token=token,
            token_problem=problem,
            voices=_voices(record.params.get("voices")),
        )

    async def _token(self, name: str, token_id: int | None) -> tuple[str | None, str | None]:
        """The model's token (or the default one), or why a stored one cannot be used (logged)."""
        try:
            return await self._tokens.reveal(token_id), None
        except TokenNotFoundError:
            log.warning("model %s names Hugging Face token %s, which is not stored", name, token_id)
            return None, None
        except VaultError as exc:
            log.error("the Hugging Face token of model %s cannot be used: %s", name, exc)
            why = (
                "no encryption key is set"
                if not self._keyed
                else "the encryption key is not the one it was stored with"
            )
            return None, f"the stored Hugging Face token for '{name}' cannot be decrypted ({why})"


def _voices(value: object) -> tuple[str, ...] | None:
    """``params.voices``: a JSON list (admin API), or ``a,b,c`` (``llmserver models add --param voices=a,b``)."""
    if isinstance(value, str):
        value = [v for v in (part.strip() for part in value.split(",")) if v]
    return tuple(str(v) for v in value) if isinstance(value, (list, tuple)) and value else None
