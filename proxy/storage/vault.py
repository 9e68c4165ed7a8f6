"""The AES-GCM vault for stored secrets (Hugging Face tokens).

A stored secret is ``(key id, nonce, ciphertext)``: a fresh 12-byte nonce per encryption, and
associated data that binds the ciphertext to its place (``hf_tokens`` passes the row id), so a
ciphertext copied into another row does not decrypt. The key id (a short hash of the key, not
the key) says which key made a ciphertext: a wrong ``LLMSERVER_ENCRYPTION_KEY`` is reported as
such instead of as damaged data.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.storage.errors import VaultError

VAULT_ASSOCIATED_DATA = b"llmserver:hf-token:v1"


VAULT_NONCE_BYTES = 12


def parse_hex_key(value: str, n_bytes: int) -> bytes:
    """``n_bytes`` of key from ``2*n_bytes`` hex characters; ``ValueError`` never shows the value."""
    if len(value) != 2 * n_bytes:
        raise ValueError(f"must be {2 * n_bytes} hexadecimal characters ({n_bytes} bytes)")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"must be {2 * n_bytes} hexadecimal characters ({n_bytes} bytes)") from None


class Vault:
    """AES-256-GCM for secrets at rest (Hugging Face tokens), keyed by ``LLMSERVER_ENCRYPTION_KEY``."""

    def __init__(self, key: str | bytes) -> None:
        if isinstance(key, str):
            try:
                key = parse_hex_key(key, 32)
            except ValueError as exc:
                raise VaultError(f"the encryption key {exc}") from None
        if len(key) != 32:
            raise VaultError("the encryption key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"llmserver-vault-key-id:" + key).hexdigest()[:12]

    def __repr__(self) -> str:
        return "Vault(<key hidden>)"

    def encrypt(self, plaintext: str, context: bytes = b"") -> tuple[bytes, bytes]:
        """``(nonce, ciphertext)`` for ``plaintext``; a fresh random nonce every call.

        ``context`` joins the associated data: the same context is needed to decrypt.
        """
        nonce = os.urandom(VAULT_NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, plaintext.encode(), VAULT_ASSOCIATED_DATA + context)

    def decrypt(self, nonce: bytes, ciphertext: bytes, context: bytes = b"") -> str:
        """The plaintext; :class:`VaultError` if the key is wrong or the data was altered or moved."""
        try:
            return self._aead.decrypt(nonce, ciphertext, VAULT_ASSOCIATED_DATA + context).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise VaultError("the stored secret does not decrypt with this encryption key") from None
