"""Issue 14: wrong-secret floods must not starve new keys, nor tell which public ids exist."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from proxy.auth.apikey import create_password_hasher, generate_api_key, key_minter
from proxy.auth.verifier import FAILURES_PER_ADDRESS, FAILURES_PER_ID, KeyVerifier
from proxy.errors import AuthenticationError
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database


def wrong_secret(full: str, i: int) -> str:
    return full[:-6] + f"{i:06d}"


@pytest.mark.asyncio
async def test_a_flood_of_wrong_secrets_costs_a_few_argon2_runs_and_a_new_key_is_served_at_once(
    db: Database,
) -> None:
    """Old code: 200 wrong secrets for one id queued 200 argon2 runs; a key used for the first time
    during the flood waited 51.8 s. Now: the id's throttle answers at once after a few failures."""
    repo = KeyRepository(db, key_minter())  # the production argon2 cost (~0.2 s a run)
    target, _ = await repo.create_key("target")
    cached, _ = await repo.create_key("cached")
    fresh, _ = await repo.create_key("fresh")
    verifier = KeyVerifier(db, concurrency=2)
    await verifier.verify(cached)
    flood = [asyncio.ensure_future(verifier.verify(wrong_secret(target, i), "10.0.0.9")) for i in range(200)]
    await asyncio.sleep(0)
    started = time.perf_counter()
    for _ in range(50):
        await verifier.verify(cached)
    assert time.perf_counter() - started < 0.5, "a cached key waited for the flood"  # argon2 runs take 0.2 s each
    started = time.perf_counter()
    await verifier.verify(fresh, "10.0.0.10")
    first_use = time.perf_counter() - started
    results = await asyncio.gather(*flood, return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert sum(r.reason == "throttled" for r in results if isinstance(r, AuthenticationError)) >= 200 - FAILURES_PER_ID
    assert verifier.stats.argon2_runs <= FAILURES_PER_ID + 2  # the cached key's, the fresh key's, the flood's
    assert first_use < 5.0, f"a new key waited {first_use:.1f} s during the flood"  # old code: 51.8 s
    started = time.perf_counter()
    with pytest.raises(AuthenticationError) as caught:  # still throttled: fast
        await verifier.verify(wrong_secret(target, 999))
    assert caught.value.reason == "throttled" and time.perf_counter() - started < 0.05
    assert (await verifier.verify(cached)).name == "cached"  # a cached key is never throttled


@pytest.mark.asyncio
async def test_failures_are_throttled_per_client_address(repo: KeyRepository, db: Database) -> None:
    full, _ = await repo.create_key("app")
    verifier = KeyVerifier(db, hasher=create_password_hasher("test"))
    for _ in range(FAILURES_PER_ADDRESS):  # distinct unknown ids: only the address is shared
        with pytest.raises(AuthenticationError):
            await verifier.verify(generate_api_key()[0], "192.0.2.7")
    runs = verifier.stats.argon2_runs
    with pytest.raises(AuthenticationError) as caught:
        await verifier.verify(full, "192.0.2.7")  # even the right key: this address is throttled
    assert caught.value.reason == "throttled" and verifier.stats.argon2_runs == runs
    assert (await verifier.verify(full, "192.0.2.8")).name == "app"  # another address is not
    assert (await verifier.verify(full, "192.0.2.7")).name == "app"  # and now it is cached: served


@pytest.mark.asyncio
async def test_an_unknown_public_id_and_a_wrong_secret_take_the_same_time(db: Database) -> None:
    """Old code: 300 ms for a wrong secret, 2 ms for an unknown id. Now both verify an argon2 hash
    of the same cost (a dummy one for the unknown id); the refusal is the same."""
    hasher = create_password_hasher("default")
    repo = KeyRepository(db, key_minter(hasher))
    full, _ = await repo.create_key("app")
    verifier = KeyVerifier(db, hasher=hasher)

    async def refusal_time(raw: str) -> float:
        started = time.perf_counter()
        with pytest.raises(AuthenticationError):
            await verifier.verify(raw)
        return time.perf_counter() - started

    await refusal_time(generate_api_key()[0])  # makes the dummy hash once
    wrong = [await refusal_time(wrong_secret(full, i)) for i in range(3)]
    unknown = [await refusal_time(generate_api_key()[0]) for _ in range(3)]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.6 < ratio < 1.6, (
        f"unknown id {statistics.median(unknown):.3f} s vs wrong secret {statistics.median(wrong):.3f} s"
    )
