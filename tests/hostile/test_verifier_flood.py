"""Issues 14 and 18: verification floods must not starve new keys, lock out the innocent, nor tell
which public ids exist. (The same floods through the real proxy process: tests/faults/test_auth_floods.py.)"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from proxy.auth.apikey import create_password_hasher, generate_api_key, key_minter
from proxy.auth.gate import PrioritySlots, address_bucket
from proxy.auth.verifier import FAILURES_PER_ADDRESS, FAILURES_PER_PAIR, PER_ADDRESS, SLOW_DELAY, KeyVerifier
from proxy.errors import AuthenticationError, ThrottledError
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database


def wrong_secret(full: str, i: int) -> str:
    return full[:-6] + f"{i:06d}"


async def refusal(verifier: KeyVerifier, raw: str, address: str) -> Exception:
    with pytest.raises((AuthenticationError, ThrottledError)) as caught:
        await verifier.verify(raw, address)
    return caught.value


@pytest.mark.asyncio
async def test_a_flood_of_wrong_secrets_costs_a_few_argon2_runs_and_a_new_key_is_served_at_once(
    db: Database,
) -> None:
    """Old code: 200 wrong secrets for one id queued 200 argon2 runs; a key used for the first time
    during the flood waited 51.8 s. Now: the address may have 8 in flight, the rest are 429s at once."""
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
    assert sum(isinstance(r, ThrottledError) for r in results) >= 200 - PER_ADDRESS
    assert all(isinstance(r, (AuthenticationError, ThrottledError)) for r in results)
    assert verifier.stats.argon2_runs <= PER_ADDRESS + 2  # the cached key's, the fresh key's, the flood's
    assert first_use < 2.0, f"a new key waited {first_use:.1f} s during the flood"  # old code: 51.8 s
    assert (await verifier.verify(cached)).name == "cached"  # a cached key is never throttled


@pytest.mark.asyncio
async def test_guesses_for_a_victims_id_from_elsewhere_do_not_refuse_the_victim(db: Database) -> None:
    """Issue 18: 5 wrong secrets for a victim's public id from another address made the victim's
    valid, not yet cached key answer 401 for 60 s. Failures now count per (address, public id)."""
    repo = KeyRepository(db, key_minter(create_password_hasher("test")))
    victim, _ = await repo.create_key("victim")
    verifier = KeyVerifier(db, hasher=create_password_hasher("test"))
    for i in range(FAILURES_PER_PAIR + 3):
        await refusal(verifier, wrong_secret(victim, i), "198.51.100.66")
    assert (await verifier.verify(victim, "192.0.2.7")).name == "victim"


@pytest.mark.asyncio
async def test_random_keys_from_a_shared_address_slow_the_victim_down_but_never_refuse_it(db: Database) -> None:
    """Issue 18: 30 random keys from an address shared with the victim (an office behind NAT) made
    the victim's valid key answer 401 for 60 s. Now the address's attempts are slowed, never refused
    for a right secret; a wrong one is a ThrottledError (429 with retry-after), never a 401."""
    repo = KeyRepository(db, key_minter(create_password_hasher("test")))
    victim, _ = await repo.create_key("victim")
    verifier = KeyVerifier(db, hasher=create_password_hasher("test"))
    for _ in range(FAILURES_PER_ADDRESS):
        assert isinstance(await refusal(verifier, generate_api_key()[0], "192.0.2.7"), AuthenticationError)
    unknown = await refusal(verifier, generate_api_key()[0], "192.0.2.7")
    assert isinstance(unknown, ThrottledError) and unknown.retry_after > 0  # throttled: a 429, not a 401
    started = time.perf_counter()
    assert (await verifier.verify(victim, "192.0.2.7")).name == "victim"  # old code: "throttled" (401)
    assert SLOW_DELAY <= time.perf_counter() - started < SLOW_DELAY + 2  # slowed down, not refused
    assert (await verifier.verify(victim, "192.0.2.7")).name == "victim"  # and now cached: at once


@pytest.mark.asyncio
async def test_the_throttle_answers_alike_for_known_and_unknown_ids(db: Database) -> None:
    """No oracle: wrong secrets for a real id and for an unknown one meet the same limit, the same
    answers in the same order."""
    repo = KeyRepository(db, key_minter(create_password_hasher("test")))
    real, _ = await repo.create_key("real")
    unknown = generate_api_key()[0]
    verifier = KeyVerifier(db, hasher=create_password_hasher("test"))
    answers = {}
    for name, raw, address in (("real", real, "203.0.113.1"), ("unknown", unknown, "203.0.113.2")):
        answers[name] = [type(await refusal(verifier, wrong_secret(raw, i), address)) for i in range(7)]
    assert answers["real"] == answers["unknown"]
    assert answers["real"] == [AuthenticationError] * FAILURES_PER_PAIR + [ThrottledError] * 2


@pytest.mark.asyncio
async def test_unknown_public_ids_cost_no_argon2(db: Database) -> None:
    """Issue 18: an unknown id is refused without argon2 (one calibration run at most, for its timing)."""
    verifier = KeyVerifier(db, hasher=create_password_hasher("test"))
    for i in range(20):
        await refusal(verifier, generate_api_key()[0], f"198.51.100.{i}")
    assert verifier.stats.argon2_runs <= 1
    assert verifier.gate.stats.pretended == 20


@pytest.mark.asyncio
async def test_an_unknown_public_id_and_a_wrong_secret_take_the_same_time(db: Database) -> None:
    """Old code: 300 ms for a wrong secret, 2 ms for an unknown id. Now the unknown id's refusal
    takes as long as the recent argon2 runs took, without running one; the refusal is the same."""
    hasher = create_password_hasher("default")
    repo = KeyRepository(db, key_minter(hasher))
    full, _ = await repo.create_key("app")
    verifier = KeyVerifier(db, hasher=hasher)

    async def refusal_time(raw: str, address: str) -> float:
        started = time.perf_counter()
        await refusal(verifier, raw, address)
        return time.perf_counter() - started

    await refusal_time(generate_api_key()[0], "192.0.2.1")  # calibrates once
    wrong = [await refusal_time(wrong_secret(full, i), f"192.0.2.{i + 10}") for i in range(3)]
    unknown = [await refusal_time(generate_api_key()[0], f"192.0.2.{i + 20}") for i in range(3)]
    ratio = statistics.median(unknown) / statistics.median(wrong)
    assert 0.6 < ratio < 1.6, (
        f"unknown id {statistics.median(unknown):.3f} s vs wrong secret {statistics.median(wrong):.3f} s"
    )


@pytest.mark.asyncio
async def test_a_refused_key_sent_again_costs_nothing_until_a_key_changes(db: Database) -> None:
    """The same wrong key again (a misconfigured client's retries) is refused from memory, known id
    or not; a key created after its first refusal is served within a second all the same."""
    hasher = create_password_hasher("test")
    repo = KeyRepository(db, key_minter(hasher))
    real, _ = await repo.create_key("real")
    verifier = KeyVerifier(db, hasher=hasher)
    wrong, unknown = wrong_secret(real, 1), generate_api_key()[0]
    for raw in (wrong, unknown):
        await refusal(verifier, raw, "192.0.2.50")
    runs, pretended = verifier.stats.argon2_runs, verifier.gate.stats.pretended
    for _ in range(50):  # far beyond the throttle: no slow-down, no 429, no work
        assert isinstance(await refusal(verifier, wrong, "192.0.2.50"), AuthenticationError)
        assert isinstance(await refusal(verifier, unknown, "192.0.2.50"), AuthenticationError)
    assert (verifier.stats.argon2_runs, verifier.gate.stats.pretended) == (runs, pretended)
    made, _ = await repo.create_key("made later")
    assert (await verifier.verify(made, "192.0.2.51")).name == "made later"
    await asyncio.sleep(0.6)  # another key changed: what was refused is judged again
    assert isinstance(await refusal(verifier, unknown, "192.0.2.52"), AuthenticationError)
    assert verifier.gate.stats.pretended == pretended + 1


@pytest.mark.asyncio
async def test_the_gate_serves_clean_addresses_first_and_a_cancelled_waiter_keeps_no_thread() -> None:
    slots = PrioritySlots(1)
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        async with slots.held(priority):
            order.append(name)
            await asyncio.sleep(0.01)

    async with slots.held(0):  # the only thread is busy while these arrive
        waiters = [asyncio.ensure_future(take(f"failing{i}", 5)) for i in range(3)]
        waiters.append(asyncio.ensure_future(take("gone", 0)))
        waiters.append(asyncio.ensure_future(take("clean", 0)))
        await asyncio.sleep(0)
        waiters[3].cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert order == ["clean", "failing0", "failing1", "failing2"]
    await asyncio.wait_for(take("after", 9), 1.0)  # the thread is free again: nothing leaked


def test_ipv6_clients_are_counted_per_64() -> None:
    assert address_bucket("2001:db8:1:2:aaaa::1") == address_bucket("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert address_bucket("::ffff:192.0.2.7") == "192.0.2.7" and address_bucket(None) == ""
