"""Secrets: key format, argon2id, the vault, and the key verifier (cache, revocation, bounds)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.auth import gate as gate_module
from proxy.auth.apikey import (
    KEY_LENGTH,
    create_password_hasher,
    generate_api_key,
    hash_secret,
    parse_api_key,
    verify_secret,
)
from proxy.auth.verifier import KeyVerifier
from proxy.errors import AuthenticationError, VerifierBusyError
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.errors import VaultError
from proxy.storage.vault import Vault

pytestmark = pytest.mark.timeout(30)

KEY_HEX = "00112233445566778899aabbccddeeff" * 2


# --- format -------------------------------------------------------------------------------------


def test_generated_keys_have_the_documented_format() -> None:
    full, public_id, secret = generate_api_key()
    assert re.fullmatch(r"llms_[0-9A-Za-z]{12}_[0-9A-Za-z]{32}", full)
    assert full == f"llms_{public_id}_{secret}" and len(full) == KEY_LENGTH
    assert parse_api_key(full) == (public_id, secret)
    assert len({generate_api_key()[0] for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "llms",
        "llms__",
        "sk-" + "a" * 47,
        "llmx_" + "a" * 12 + "_" + "b" * 32,
        "llms-" + "a" * 12 + "_" + "b" * 32,
        "llms_" + "a" * 12 + "-" + "b" * 32,
        "llms_" + "a" * 11 + "_" + "b" * 33,
        "llms_" + "a" * 12 + "_" + "b" * 31,
        "llms_" + "a" * 12 + "_" + "b" * 33,
        "llms_" + "a" * 12 + "_" + "b" * 31 + " ",
        "llms_" + "a" * 12 + "_" + "b" * 31 + "é",
        "llms_" + "a" * 11 + "٣" + "_" + "b" * 32,  # a non-ASCII digit
        "llms_" + "a" * 12 + "_" + "b" * 30 + "_b",
        "llms_" + "a" * 12 + "_" + "b" * 32 + "\n",
        "LLMS_" + "a" * 12 + "_" + "b" * 32,
    ],
)
def test_parse_rejects_anything_not_exactly_a_key(raw: str) -> None:
    assert parse_api_key(raw) is None


def test_parse_is_cheap_on_huge_input() -> None:
    huge = "llms_" + "a" * 10_000_000
    started = time.perf_counter()
    assert parse_api_key(huge) is None
    assert time.perf_counter() - started < 0.01


# --- argon2 -------------------------------------------------------------------------------------


def test_argon2id_with_the_production_parameters() -> None:
    secret = generate_api_key()[2]
    started = time.perf_counter()
    hashed = hash_secret(secret)
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_secret(hashed, secret)
    assert not verify_secret(hashed, secret[:-1] + "x")
    assert time.perf_counter() - started > 0.02  # it is meant to be slow


def test_argon2_test_profile_and_broken_hashes() -> None:
    hashed = hash_secret("pw", create_password_hasher("test"))
    assert hashed.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert verify_secret(hashed, "pw") and not verify_secret(hashed, "pW")
    assert not verify_secret("not a hash", "pw")
    assert not verify_secret(hashed[:-4], "pw")
    with pytest.raises(ValueError, match="unknown argon2 profile"):
        create_password_hasher("fast")


# --- vault --------------------------------------------------------------------------------------


def test_vault_round_trip_with_fresh_nonces_and_the_documented_associated_data() -> None:
    vault = Vault(KEY_HEX)
    nonce, ciphertext = vault.encrypt("hf_secret_token")
    assert vault.decrypt(nonce, ciphertext) == "hf_secret_token"
    assert b"hf_secret_token" not in ciphertext and len(nonce) == 12
    assert vault.encrypt("hf_secret_token")[0] != nonce
    raw = AESGCM(bytes.fromhex(KEY_HEX))
    assert raw.decrypt(nonce, ciphertext, b"llmserver:hf-token:v1") == b"hf_secret_token"
    assert KEY_HEX not in repr(vault)


def test_vault_refuses_tampering_wrong_keys_and_bad_keys() -> None:
    vault = Vault(KEY_HEX)
    nonce, ciphertext = vault.encrypt("token")
    with pytest.raises(VaultError):
        vault.decrypt(nonce, ciphertext[:-1] + bytes([ciphertext[-1] ^ 1]))
    with pytest.raises(VaultError):
        Vault("ff" * 32).decrypt(nonce, ciphertext)
    with pytest.raises(VaultError) as caught:
        Vault("zz" + KEY_HEX[2:])
    assert KEY_HEX[2:] not in str(caught.value)
    with pytest.raises(VaultError):
        Vault("abcd")


# --- verifier -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_key_pays_argon2_once_then_takes_the_fast_path(repo: KeyRepository, db: Database) -> None:
    full, key = await repo.create_key("app")
    verifier = KeyVerifier(db)
    assert (await verifier.verify(full)).id == key.id
    n = 5000
    started = time.perf_counter()
    for _ in range(n):
        await verifier.verify(full)
    per_call = (time.perf_counter() - started) / n
    assert verifier.stats.argon2_runs == 1
    assert per_call < 100e-6, f"cached verification took {per_call * 1e6:.1f} µs"


@pytest.mark.asyncio
async def test_refusals_say_why(repo: KeyRepository, db: Database) -> None:
    full, _ = await repo.create_key("app")
    verifier = KeyVerifier(db)
    wrong = full[:-1] + ("a" if full[-1] != "a" else "b")
    unknown = generate_api_key()[0]
    for raw, reason in [("Bearer x", "malformed key"), (wrong, "wrong secret"), (unknown, "unknown key")]:
        with pytest.raises(AuthenticationError) as caught:
            await verifier.verify(raw)
        assert caught.value.reason == reason
    assert verifier.stats.argon2_runs == 1
    for _ in range(3):  # the same wrong key again is refused from memory (issue 18), for the same reason
        with pytest.raises(AuthenticationError) as caught:
            await verifier.verify(wrong)
        assert caught.value.reason == "wrong secret"
    for _ in range(3):  # an unknown id costs no argon2 at all (issue 18), though it takes as long (issue 14)
        with pytest.raises(AuthenticationError) as caught:
            await verifier.verify(generate_api_key()[0], f"192.0.2.{_}")
        assert caught.value.reason == "unknown key"
    assert verifier.stats.argon2_runs == 1 and verifier.gate.stats.pretended == 4


@pytest.mark.asyncio
async def test_concurrent_first_requests_of_one_key_share_one_verification(repo: KeyRepository, db: Database) -> None:
    full, _ = await repo.create_key("app")
    verifier = KeyVerifier(db)
    keys = await asyncio.gather(*(verifier.verify(full) for _ in range(20)))
    assert len({k.id for k in keys}) == 1 and verifier.stats.argon2_runs == 1


@pytest.mark.asyncio
async def test_revocation_in_this_process_takes_effect_within_a_second(repo: KeyRepository, db: Database) -> None:
    full, key = await repo.create_key("app")
    verifier = KeyVerifier(db)
    await verifier.verify(full)
    await repo.revoke_key(key.id)
    assert await refused_within(verifier, full, 1.0) == "revoked key"


REVOKER = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], timeout=5)
    now = time.time()
    key_id = int(sys.argv[2])
    conn.execute("UPDATE api_keys SET revoked_at = ?, updated_at = ? WHERE id = ?", (now, now, key_id))
    conn.commit()
    """
)


@pytest.mark.asyncio
async def test_revocation_by_another_process_takes_effect_within_a_second(repo: KeyRepository, db: Database) -> None:
    full, key = await repo.create_key("app")
    verifier = KeyVerifier(db)
    await verifier.verify(full)
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", REVOKER, str(db.path), str(key.id)], check=True)
    assert await refused_within(verifier, full, 1.0) == "revoked key"
    assert verifier.stats.argon2_runs == 1  # refused from the refreshed cache, no argon2


@pytest.mark.asyncio
async def test_a_changed_allow_list_arrives_within_a_second(repo: KeyRepository, db: Database) -> None:
    full, key = await repo.create_key("app", allowed_models=["a"])
    verifier = KeyVerifier(db)
    assert (await verifier.verify(full)).allows_model("a")
    await repo.update_key(key.id, allowed_models=["b"])
    deadline = time.monotonic() + 1.0
    while (await verifier.verify(full)).allows_model("a"):
        assert time.monotonic() < deadline, "the old allow-list is still used after 1 s"
        await asyncio.sleep(0.02)
    assert verifier.stats.argon2_runs == 1


@pytest.mark.asyncio
async def test_a_cached_key_expires_on_time(repo: KeyRepository, db: Database) -> None:
    full, _ = await repo.create_key("app", expires_at=time.time() + 0.2)
    verifier = KeyVerifier(db)
    await verifier.verify(full)
    await asyncio.sleep(0.2)
    assert await refused_within(verifier, full, 0.05) == "expired key"


@pytest.mark.asyncio
async def test_a_changed_secret_hash_drops_the_cached_key(repo: KeyRepository, db: Database) -> None:
    full, key = await repo.create_key("app")
    verifier = KeyVerifier(db)
    await verifier.verify(full)
    other = hash_secret("something else", create_password_hasher("test"))
    await db.execute_write(
        lambda c: c.execute("UPDATE api_keys SET secret_hash = ? WHERE id = ?", (other, key.id)).rowcount
    )
    assert await refused_within(verifier, full, 1.0) == "wrong secret"


@pytest.mark.asyncio
async def test_argon2_is_bounded_and_a_flood_does_not_slow_cached_keys(
    repo: KeyRepository, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, _ = await repo.create_key("good")
    running, peak, lock = [0], [0], threading.Lock()

    def slow_verify(secret_hash: str, secret: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return False

    verifier = KeyVerifier(db, concurrency=2, max_in_flight=8)
    await verifier.verify(good)
    monkeypatch.setattr(gate_module, "verify_secret", slow_verify)
    # 12 wrong secrets of one real id, from 12 addresses (one address has one run at a time)
    wrong = [good[:-4] + f"{i:04d}" for i in range(12)]
    flood = asyncio.gather(
        *(verifier.verify(raw, f"192.0.2.{i}") for i, raw in enumerate(wrong)), return_exceptions=True
    )
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    for _ in range(100):
        await verifier.verify(good)
    assert time.perf_counter() - started < 0.05
    results = await flood
    assert peak[0] == 2
    assert sum(isinstance(r, VerifierBusyError) for r in results) == 4  # beyond 8 in flight: busy at once
    assert all(isinstance(r, (AuthenticationError, VerifierBusyError)) for r in results)


@pytest.mark.asyncio
async def test_a_key_revoked_while_its_argon2_runs_is_not_cached_as_active(
    repo: KeyRepository, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    known, _ = await repo.create_key("known")
    new, new_key = await repo.create_key("new")
    verifier = KeyVerifier(db, refresh_interval=0.1)
    await verifier.verify(known)

    def slow_verify(secret_hash: str, secret: str) -> bool:
        time.sleep(0.5)
        return True

    monkeypatch.setattr(gate_module, "verify_secret", slow_verify)
    first = asyncio.ensure_future(verifier.verify(new))  # reads the row, then argon2 for 0.5 s
    await asyncio.sleep(0.1)
    await repo.revoke_key(new_key.id)
    await asyncio.sleep(0.15)
    await verifier.verify(known)  # this process learns of the change while argon2 still runs
    with pytest.raises(AuthenticationError) as caught:
        await first
    assert caught.value.reason == "revoked key"
    with pytest.raises(AuthenticationError):
        await verifier.verify(new)


async def refused_within(verifier: KeyVerifier, raw: str, seconds: float) -> str:
    """Verify repeatedly until refused; the reason. Fails if still accepted after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await verifier.verify(raw)
        except AuthenticationError as exc:
            return exc.reason
        assert time.monotonic() < deadline, f"still accepted after {seconds} s"
        await asyncio.sleep(0.02)
