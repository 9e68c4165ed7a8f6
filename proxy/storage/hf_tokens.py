"""Hugging Face tokens, encrypted at rest with the :class:`~proxy.storage.vault.Vault`.

A row keeps a label, the token's last four characters (to recognise it in a list), the key id of
the encryption key, a fresh nonce and the AES-GCM ciphertext whose associated data is the row id:
a ciphertext copied into another row, or altered, fails to decrypt and says so. The token itself
is returned only by :meth:`TokenStore.reveal`, for a download; it is never in a ``repr``, a log
line or an error message. One token may be the default, used by models that name none.

The row id must be known before encrypting, so an insert writes a placeholder and replaces it with
the ciphertext in the same transaction (one writer job): no reader ever sees the placeholder.

The vault's key (issue 25): ``vault_state.key_id`` names the key every token is encrypted with now. A
token is stored only under that key (:func:`check_key`), so a shell still holding the key from before
``rotate-key`` cannot add a token nobody could decrypt. A rotation re-encrypts every token under the
new key and keeps, per row, the ciphertext under the key before it (``previous_*``): the service that
is still running with that key keeps decrypting (:func:`decrypt_row`) until it restarts with the new
key, and the first process that starts with it drops them (:meth:`TokenStore.settle_key`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from proxy.storage.audit import Actor, Audit, audited
from proxy.storage.bounds import check_int, check_text
from proxy.storage.database import Database
from proxy.storage.errors import TokenNotFoundError, ValidationError, VaultError
from proxy.storage.vault import Vault

MAX_LABEL_LENGTH = 100
_COLUMNS = "id, name, last_four, key_id, is_default, created_at"


@dataclass(frozen=True)
class HfToken:
    """A stored token as lists show it: never the token itself."""

    id: int
    label: str
    last_four: str
    key_id: str
    is_default: bool
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> HfToken:
        return cls(row["id"], row["name"], row["last_four"], row["key_id"], bool(row["is_default"]), row["created_at"])

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "label": self.label,
            "last_four": self.last_four,
            "is_default": self.is_default,
            "created_at": self.created_at,
        }


def _context(row_id: int) -> bytes:
    return f":row:{row_id}".encode()


def check_token_text(token: object) -> str:
    token = token.strip() if isinstance(token, str) else ""
    if not 8 <= len(token) <= 400 or not token.isascii() or not token.isprintable() or " " in token:
        raise ValidationError(
            "a Hugging Face token is 8 to 400 printable ASCII characters without spaces", field="token"
        )
    return token


def check_label(label: object) -> str:
    return check_text("label", label, max_length=MAX_LABEL_LENGTH)


def check_token_id(token_id: object) -> int:
    return check_int("hf_token_id", token_id, low=1)


class TokenStore:
    """The ``huggingface_tokens`` table through one vault."""

    def __init__(self, db: Database, vault: Vault | None) -> None:
        self.db = db
        self._vault = vault

    async def _keyed_vault(self) -> Vault:
        """The vault, checked against the key the tokens use before a write (the write checks again)."""
        current = await self.db.execute_read(vault_key_id)
        vault = self._need_vault(current)
        if current is not None and current != vault.key_id:
            raise VaultError(key_mismatch(vault, current) + "; nothing was changed")
        return vault

    def _need_vault(self, current: str | None = None) -> Vault:
        """The vault; without a key, a sentence that never advises a new key when tokens have one."""
        if self._vault is None:
            if current is not None:
                raise VaultError(
                    f"LLMSERVER_ENCRYPTION_KEY is not set: the stored Hugging Face tokens use key id {current}; "
                    "run the command where the service's settings are (the data directory's secrets.env after "
                    "`make run`, or as the service user on a systemd install: sudo -u llmserver llmserver ...)"
                )
            raise VaultError(
                "LLMSERVER_ENCRYPTION_KEY is not set: it is needed to store or use Hugging Face tokens "
                "(no token was stored yet, so a new key is safe: openssl rand -hex 32)"
            )
        return self._vault

    async def add(self, label: object, token: object, *, default: bool = False, by: Actor | None = None) -> HfToken:
        """Store ``token`` encrypted; the new row (without the token). ``by``: who asked, audited in the
        same transaction (``proxy.storage.audit``; every change below alike)."""
        label, token = check_label(label), check_token_text(token)
        vault = await self._keyed_vault()

        def insert(conn: sqlite3.Connection) -> HfToken:
            check_key(conn, vault)
            if default:
                conn.execute("UPDATE huggingface_tokens SET is_default = 0 WHERE is_default = 1")
            row_id = conn.execute(
                "INSERT INTO huggingface_tokens (name, ciphertext, nonce, last_four, created_at, key_id, is_default) "
                "VALUES (?, x'', x'', ?, ?, ?, ?) RETURNING id",
                (label, token[-4:], time.time(), vault.key_id, int(default)),
            ).fetchone()[0]
            nonce, ciphertext = vault.encrypt(token, _context(row_id))
            conn.execute(
                "UPDATE huggingface_tokens SET nonce = ?, ciphertext = ? WHERE id = ?", (nonce, ciphertext, row_id)
            )
            return _select(conn, row_id)

        return await self.db.execute_write(audited(by, insert, lambda t: _audit("hf_token.add", t)))

    async def list(self) -> list[HfToken]:
        def read(conn: sqlite3.Connection) -> list[HfToken]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM huggingface_tokens ORDER BY id").fetchall()
            return [HfToken.from_row(r) for r in rows]

        return await self.db.execute_read(read)

    async def get(self, token_id: int) -> HfToken:
        check_token_id(token_id)
        return await self.db.execute_read(lambda conn: _select(conn, token_id))

    async def delete(self, token_id: int, *, by: Actor | None = None) -> None:
        check_token_id(token_id)

        def delete(conn: sqlite3.Connection) -> HfToken:
            gone = _select(conn, token_id)
            conn.execute("DELETE FROM huggingface_tokens WHERE id = ?", (token_id,))
            return gone

        def describe(gone: HfToken) -> Audit:
            return Audit("hf_token.delete", f"hf token {gone.id}", before=gone.to_json())

        await self.db.execute_write(audited(by, delete, describe))

    async def set_default(self, token_id: int, *, by: Actor | None = None) -> HfToken:
        check_token_id(token_id)

        def update(conn: sqlite3.Connection) -> HfToken:
            _select(conn, token_id)
            conn.execute("UPDATE huggingface_tokens SET is_default = 0 WHERE is_default = 1")
            conn.execute("UPDATE huggingface_tokens SET is_default = 1 WHERE id = ?", (token_id,))
            return _select(conn, token_id)

        return await self.db.execute_write(audited(by, update, lambda t: _audit("hf_token.default", t)))

    async def reveal(self, token_id: int | None) -> str | None:
        """The plaintext of token ``token_id``, or of the default token when None (None if there is none)."""
        if token_id is not None:
            check_token_id(token_id)

        def read(conn: sqlite3.Connection) -> sqlite3.Row | None:
            if token_id is None:
                return conn.execute("SELECT * FROM huggingface_tokens WHERE is_default = 1").fetchone()
            row = conn.execute("SELECT * FROM huggingface_tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise TokenNotFoundError(f"no Hugging Face token with id {token_id}")
            return row

        row = await self.db.execute_read(read)
        return None if row is None else decrypt_row(self._need_vault(row["key_id"] or None), row)

    async def rotate(self, new: Vault, *, by: Actor | None = None) -> int:
        """Re-encrypt every token under ``new`` in one transaction; how many. Nothing changes on error.

        Each row keeps its ciphertext under the key before (unless it already keeps one from an earlier
        rotation that no process with the newer key has settled: the running service holds that one).
        """
        old = await self._keyed_vault()

        def rotate(conn: sqlite3.Connection) -> int:
            check_key(conn, old)
            rows = conn.execute("SELECT * FROM huggingface_tokens ORDER BY id").fetchall()
            for row in rows:
                nonce, ciphertext = new.encrypt(decrypt_row(old, row), _context(row["id"]))
                kept = (row["previous_key_id"], row["previous_nonce"], row["previous_ciphertext"])
                if not row["previous_key_id"]:
                    kept = (row["key_id"], row["nonce"], row["ciphertext"])
                conn.execute(
                    "UPDATE huggingface_tokens SET nonce = ?, ciphertext = ?, key_id = ?, previous_key_id = ?, "
                    "previous_nonce = ?, previous_ciphertext = ? WHERE id = ?",
                    (nonce, ciphertext, new.key_id, *kept, row["id"]),
                )
            conn.execute("UPDATE vault_state SET key_id = ?, rotated_at = ? WHERE id = 1", (new.key_id, time.time()))
            return len(rows)

        def describe(count: int) -> Audit:
            return Audit("vault.rotate_key", "vault", {"key_id": old.key_id}, {"key_id": new.key_id, "tokens": count})

        return await self.db.execute_write(audited(by, rotate, describe))

    async def settle_key(self) -> str | None:
        """At a service's start: drop the ciphertexts under the key before the last rotation once this
        process holds the new key; a sentence for the log when this process's key is not the vault's."""
        if self._vault is None:
            return None
        vault = self._vault

        def settle(conn: sqlite3.Connection) -> str | None:
            current = vault_key_id(conn)
            if current is None or current == vault.key_id:
                conn.execute(
                    "UPDATE huggingface_tokens SET previous_key_id = NULL, previous_nonce = NULL, "
                    "previous_ciphertext = NULL WHERE previous_key_id IS NOT NULL"
                )
                return None
            return key_mismatch(vault, current) + " (tokens kept under the key before a rotation still decrypt)"

        return await self.db.execute_write(settle)


def _audit(action: str, token: HfToken) -> Audit:
    return Audit(action, f"hf token {token.id}", after=token.to_json())


def vault_key_id(conn: sqlite3.Connection) -> str | None:
    """The key id every token is stored under now (databases from before ``vault_state``: the rows')."""
    row = conn.execute("SELECT key_id FROM vault_state WHERE id = 1").fetchone()
    if row is not None:
        return str(row[0])
    row = conn.execute(
        "SELECT key_id FROM huggingface_tokens WHERE key_id != '' GROUP BY key_id ORDER BY COUNT(*) DESC LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def key_mismatch(vault: Vault, current: str) -> str:
    return (
        f"LLMSERVER_ENCRYPTION_KEY (key id {vault.key_id}) is not the key the stored Hugging Face tokens use "
        f"(key id {current}): set the key `llmserver vault rotate-key` printed or wrote last"
    )


def check_key(conn: sqlite3.Connection, vault: Vault) -> None:
    """Refuse a key that is not the vault's (in the writer's transaction); the first key used becomes it."""
    current = vault_key_id(conn)
    if current is None:
        conn.execute("INSERT OR REPLACE INTO vault_state (id, key_id) VALUES (1, ?)", (vault.key_id,))
    elif current != vault.key_id:
        raise VaultError(key_mismatch(vault, current) + "; nothing was changed")
    elif conn.execute("SELECT 1 FROM vault_state WHERE id = 1").fetchone() is None:
        conn.execute("INSERT INTO vault_state (id, key_id) VALUES (1, ?)", (current,))


def decrypt_row(vault: Vault, row: sqlite3.Row) -> str:
    """A row's token; a :class:`VaultError` that names the row and the cause, never the token.

    A row re-encrypted by a rotation still decrypts with the key before it until that is settled."""
    nonce, ciphertext = row["nonce"], row["ciphertext"]
    if row["key_id"] and row["key_id"] != vault.key_id:
        if row["previous_key_id"] != vault.key_id or not row["previous_ciphertext"]:
            raise VaultError(
                f"Hugging Face token {row['id']} ({row['name']!r}) was encrypted with another key (key id "
                f"{row['key_id']}); LLMSERVER_ENCRYPTION_KEY is key id {vault.key_id}: set the key it was stored with"
            )
        nonce, ciphertext = row["previous_nonce"], row["previous_ciphertext"]
    try:
        return vault.decrypt(nonce, ciphertext, _context(row["id"]))
    except VaultError:
        raise VaultError(
            f"Hugging Face token {row['id']} ({row['name']!r}) does not decrypt: its ciphertext was altered or "
            "copied from another row; delete it and add the token again"
        ) from None


def _select(conn: sqlite3.Connection, token_id: int) -> HfToken:
    row = conn.execute(f"SELECT {_COLUMNS} FROM huggingface_tokens WHERE id = ?", (token_id,)).fetchone()
    if row is None:
        raise TokenNotFoundError(f"no Hugging Face token with id {token_id}")
    return HfToken.from_row(row)
