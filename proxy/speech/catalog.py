"""Which speech models exist, and with what token to reach them: the one thing speech asks of the
model registry.

:class:`SpeechCatalog` is the interface the endpoints use. :class:`SeedTableCatalog` is its first
implementation, reading the seed tables directly; it is the only place in ``proxy.speech`` that
knows them, so the model registry (issue 10) can replace it with one adapter over its own API:

- ``models``: ``name``, ``kind`` (``tts``/``stt``; ``llm`` rows are not speech models),
  ``source_repo`` (the Hugging Face repository the inference service runs), ``desired_state``
  (``running`` = served; the model is remote, so starting it only marks it so), and ``params`` (JSON;
  ``hf_token_id`` picks a stored token by id, ``voices`` lists the voices a TTS model accepts).
- ``huggingface_tokens``: ``id``, ``nonce``, ``ciphertext``, decrypted with the proxy's
  :class:`~proxy.storage.vault.Vault` (``LLMSERVER_ENCRYPTION_KEY``). A model without
  ``hf_token_id`` uses the newest stored token; with no token stored (or no encryption key) the call
  goes out without one, and the inference service's refusal says the rest.

The plaintext token lives in the returned :class:`SpeechModel` only, in memory, for one request; its
``repr`` hides it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass, field
from typing import Protocol

from proxy.storage.database import Database
from proxy.storage.errors import VaultError
from proxy.storage.vault import Vault

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
    voices: tuple[str, ...] | None = None  # the voices a TTS model accepts; None: OpenAI's names


class SpeechCatalog(Protocol):
    """The speech models the proxy can serve."""

    async def resolve(self, name: str) -> SpeechModel | None:
        """The model called ``name`` if it is a registered speech model, else None."""
        ...


class SeedTableCatalog:
    """:class:`SpeechCatalog` over the seed ``models`` and ``huggingface_tokens`` tables."""

    def __init__(self, db: Database, vault: Vault | None) -> None:
        self._db = db
        self._vault = vault

    async def resolve(self, name: str) -> SpeechModel | None:
        row = await self._db.execute_read(lambda conn: _model_row(conn, name))
        if row is None:
            return None
        kind, repo, desired, params_text = row
        params = _params(params_text)
        token = await self._token(params.get("hf_token_id"))
        voices = params.get("voices")
        return SpeechModel(
            name=name,
            kind=kind,
            repo=repo or name,
            running=desired == "running",
            token=token,
            voices=tuple(str(v) for v in voices) if isinstance(voices, list) else None,
        )

    async def _token(self, token_id: object) -> str | None:
        if self._vault is None:
            return None
        wanted = token_id if isinstance(token_id, int) else None
        row = await self._db.execute_read(lambda conn: _token_row(conn, wanted))
        if row is None:
            return None
        nonce, ciphertext = row
        try:
            return self._vault.decrypt(bytes(nonce), bytes(ciphertext))
        except VaultError as exc:
            log.error("the stored Hugging Face token does not decrypt: %s", exc)
            return None


def _model_row(conn: sqlite3.Connection, name: str) -> tuple[str, str | None, str, str] | None:
    row = conn.execute(
        "SELECT kind, source_repo, desired_state, params FROM models WHERE name = ? AND kind IN ('tts', 'stt')",
        (name,),
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def _token_row(conn: sqlite3.Connection, token_id: int | None) -> tuple[bytes, bytes] | None:
    if token_id is not None:
        row = conn.execute("SELECT nonce, ciphertext FROM huggingface_tokens WHERE id = ?", (token_id,)).fetchone()
    else:
        row = conn.execute("SELECT nonce, ciphertext FROM huggingface_tokens ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else (row[0], row[1])


def _params(text: str | None) -> dict[str, object]:
    try:
        params = json.loads(text or "{}")
    except ValueError:
        return {}
    return params if isinstance(params, dict) else {}
