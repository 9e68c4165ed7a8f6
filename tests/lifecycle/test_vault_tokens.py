"""The Hugging Face token vault: encryption per row, wrong key, tampering, moved ciphertexts, rotation."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.storage.database import Database
from proxy.storage.errors import VaultError
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.vault import Vault
from tests.harness import ROOT, clean_env

KEY = "11" * 32
OTHER_KEY = "22" * 32
TOKEN_A = "hf_aaaaAAAAaaaaAAAAaaaa1111"
TOKEN_B = "hf_bbbbBBBBbbbbBBBBbbbb2222"


def _raw(db_path: Path, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db_path)
    try:
        rows = list(conn.execute(sql, args))
        conn.commit()
        return rows
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_tokens_are_stored_encrypted_with_a_fresh_nonce_and_shown_by_last_four_only(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = TokenStore(db, Vault(KEY))
    a = await store.add("work", TOKEN_A, default=True)
    b = await store.add("home", TOKEN_A)
    assert (a.last_four, a.is_default, b.is_default) == ("1111", True, False)
    assert TOKEN_A not in repr(a) and TOKEN_A not in str(a.to_json())
    rows = _raw(tmp_path / "app.db", "SELECT nonce, ciphertext, key_id FROM huggingface_tokens ORDER BY id")
    assert len(rows[0][0]) == 12 and rows[0][0] != rows[1][0]  # type: ignore[arg-type]
    assert rows[0][1] != rows[1][1] and TOKEN_A.encode() not in rows[0][1]  # type: ignore[operator]
    assert rows[0][2] == Vault(KEY).key_id
    assert await store.reveal(None) == TOKEN_A  # the default
    assert await store.reveal(b.id) == TOKEN_A
    assert TOKEN_A not in caplog.text


@pytest.mark.asyncio
async def test_a_wrong_key_is_a_clear_error_naming_the_key_ids(db: Database) -> None:
    stored = await TokenStore(db, Vault(KEY)).add("work", TOKEN_A)
    with pytest.raises(VaultError) as caught:
        await TokenStore(db, Vault(OTHER_KEY)).reveal(stored.id)
    message = str(caught.value)
    assert "encrypted with another key" in message and Vault(KEY).key_id in message
    assert TOKEN_A not in message and KEY not in message and OTHER_KEY not in message


@pytest.mark.asyncio
async def test_a_tampered_ciphertext_and_a_ciphertext_moved_to_another_row_are_detected(
    db: Database, tmp_path: Path
) -> None:
    store = TokenStore(db, Vault(KEY))
    a = await store.add("a", TOKEN_A)
    b = await store.add("b", TOKEN_B)
    path = tmp_path / "app.db"
    # Moved: row b gets row a's nonce and ciphertext (an attacker with the file swapping tokens).
    _raw(
        path,
        "UPDATE huggingface_tokens SET nonce = (SELECT nonce FROM huggingface_tokens WHERE id = ?), "
        "ciphertext = (SELECT ciphertext FROM huggingface_tokens WHERE id = ?) WHERE id = ?",
        (a.id, a.id, b.id),
    )
    with pytest.raises(VaultError, match="altered or copied from another row") as moved:
        await store.reveal(b.id)
    assert TOKEN_A not in str(moved.value)
    # Tampered: one bit of row a's ciphertext flipped.
    ciphertext = bytearray(_raw(path, "SELECT ciphertext FROM huggingface_tokens WHERE id = ?", (a.id,))[0][0])  # type: ignore[arg-type]
    ciphertext[3] ^= 1
    _raw(path, "UPDATE huggingface_tokens SET ciphertext = ? WHERE id = ?", (bytes(ciphertext), a.id))
    with pytest.raises(VaultError, match="altered"):
        await store.reveal(a.id)


@pytest.mark.asyncio
async def test_rotation_re_encrypts_every_token_in_one_transaction(db: Database) -> None:
    old, new = Vault(KEY), Vault(OTHER_KEY)
    store = TokenStore(db, old)
    ids = [(await store.add(f"t{i}", token)).id for i, token in enumerate((TOKEN_A, TOKEN_B))]
    assert await store.rotate(new) == 2
    rotated = TokenStore(db, new)
    assert [await rotated.reveal(i) for i in ids] == [TOKEN_A, TOKEN_B]
    # Issue 25: the service still running with the old key keeps reading them until a process that
    # holds the new key starts (settle_key); then the old key reads nothing.
    assert await store.reveal(ids[0]) == TOKEN_A
    assert await store.settle_key() is not None  # the old key is not the vault's: said for the log
    assert await rotated.settle_key() is None
    with pytest.raises(VaultError):
        await store.reveal(ids[0])
    # A rotation that meets an unreadable token changes nothing at all.
    with pytest.raises(VaultError):
        await TokenStore(db, Vault("33" * 32)).rotate(old)
    assert [await rotated.reveal(i) for i in ids] == [TOKEN_A, TOKEN_B]


@pytest.mark.asyncio
async def test_a_key_that_is_not_the_vaults_cannot_store_a_token(db: Database) -> None:
    """Issue 25: after ``rotate-key``, ``vault add`` with the old key still in the shell stored a token that
    nobody could decrypt (and the next rotation failed on it); an empty vault remembers its key too."""
    old, new = Vault(KEY), Vault(OTHER_KEY)
    store = TokenStore(db, old)
    await store.rotate(new)  # nothing stored yet: the vault's key is the new one all the same
    with pytest.raises(VaultError, match="is not the key the stored Hugging Face tokens use") as refused:
        await store.add("stale", TOKEN_A)
    assert old.key_id in str(refused.value) and new.key_id in str(refused.value) and KEY not in str(refused.value)
    assert await store.list() == []
    added = await TokenStore(db, new).add("fresh", TOKEN_B)
    assert await TokenStore(db, new).reveal(added.id) == TOKEN_B
    with pytest.raises(VaultError, match="nothing was changed"):
        await TokenStore(db, Vault("33" * 32)).rotate(old)


@pytest.mark.asyncio
async def test_without_a_key_the_error_never_advises_a_new_one_when_tokens_exist(db: Database) -> None:
    """Issue 25: the error advised generating a new key, which locks the service out of the stored tokens."""
    with pytest.raises(VaultError, match="a new key is safe"):
        await TokenStore(db, None).add("first", TOKEN_A)
    await TokenStore(db, Vault(KEY)).add("first", TOKEN_A)
    with pytest.raises(VaultError) as caught:
        await TokenStore(db, None).add("second", TOKEN_B)
    message = str(caught.value)
    assert Vault(KEY).key_id in message and "sudo -u llmserver" in message
    assert "openssl" not in message and "token_hex" not in message and "new key" not in message


def _cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmserver.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_vault_cli_add_list_and_rotate_key(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    env.update(LLMSERVER_DATABASE_URL=f"sqlite:///{tmp_path}/app.db", LLMSERVER_ENCRYPTION_KEY=KEY)
    added = _cli(env, "vault", "add", "--label", "work", "--default", stdin=TOKEN_A + "\n")
    assert added.returncode == 0, added.stderr
    assert "...1111" in added.stdout and TOKEN_A not in added.stdout
    listed = _cli(env, "vault", "list")
    assert "work" in listed.stdout and "1111" in listed.stdout and TOKEN_A not in listed.stdout
    rotated = _cli(env, "vault", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert len(new_key) == 64 and new_key != KEY
    env["LLMSERVER_ENCRYPTION_KEY"] = new_key
    again = _cli(env, "vault", "rotate-key", "--new-key-stdin", stdin=KEY + "\n")  # and back, from stdin
    assert again.returncode == 0 and "re-encrypted 1 token(s)" in again.stdout and KEY not in again.stdout
    env["LLMSERVER_ENCRYPTION_KEY"] = new_key
    wrong = _cli(env, "vault", "rotate-key")  # the key the token is no longer under
    assert wrong.returncode == 2 and "is not the key the stored Hugging Face tokens use" in wrong.stderr
    assert TOKEN_A not in wrong.stderr + wrong.stdout
    env["LLMSERVER_ENCRYPTION_KEY"] = "abc"
    bad = _cli(env, "vault", "list")
    assert bad.returncode == 2 and "LLMSERVER_ENCRYPTION_KEY" in bad.stderr
