"""Issue 18: anonymous floods of key verifications and console logins, against the real proxy process.

Before: 150 concurrent console logins ran argon2 133 times, a new key's first request waited 15 s and
the proxy grew to 501 MB; 800 unknown keys from 40 addresses kept the argon2 queue full for 97 s and
a new key got 503 at once. Each test floods the proxy (client addresses from ``X-Forwarded-For``,
believed from loopback), uses a new valid key during the flood, and prints the figures: argon2 runs
(from ``/metrics``), the new key's first latency, the proxy's peak RSS. ``make soak`` runs the long
versions (LLMSERVER_SOAK=1).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import aiohttp

from proxy.auth.apikey import create_password_hasher, generate_api_key, hash_secret
from proxy.storage.database import Database
from proxy.storage.users import UserRepository
from tests.faults.clients import rss_bytes, scaled
from tests.harness import Daemon, Proxy

SESSION_KEY = "cd" * 64
LOGIN_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def flood_proxy(make_proxy: Any, daemon: Daemon) -> Proxy:
    """A proxy that believes X-Forwarded-For from loopback, with production argon2 costs."""
    proxy: Proxy = make_proxy(
        daemon.endpoint,
        LLMSERVER_TRUSTED_PROXIES="127.0.0.1",
        LLMSERVER_ARGON2_PROFILE="default",
        LLMSERVER_SESSION_KEY=SESSION_KEY,
        LLMSERVER_LOG_LEVEL="WARNING",
    )
    return proxy.start()


def argon2_runs(proxy: Proxy, gate: str) -> int | None:
    """The gate's argon2 runs from ``/metrics`` (None where the proxy does not count them)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf'^llmserver_argon2_runs_total\{{gate="{gate}"\}} ([0-9.e+]+)$', text, re.MULTILINE)
    return None if found is None else int(float(found.group(1)))


@contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """[before, peak] of the process's RSS, sampled every 50 ms while the block runs."""
    figures = [rss_bytes(pid), rss_bytes(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            figures[1] = max(figures[1], rss_bytes(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield figures
    finally:
        stop.set()
        sampler.join()


async def first_use(session: aiohttp.ClientSession, proxy: Proxy, key: str, address: str) -> tuple[int, float]:
    """A new key's first request during the flood: its status and latency."""
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": address}
    async with session.get(f"{proxy.base_url}/models", headers=headers) as r:
        await r.read()
        return r.status, time.perf_counter() - started


def quiet_first_use(proxy: Proxy) -> float:
    """A new key's first latency with no flood: one argon2 run on this machine, as loaded as it is."""

    async def measure() -> float:
        async with aiohttp.ClientSession() as session:
            status, latency = await first_use(session, proxy, proxy.make_key("quiet"), "10.201.0.1")
            assert status == 200
            return latency

    return asyncio.run(measure())


def bound(quiet: float) -> float:
    """How long a new key may wait during a flood: the runs in progress, then its own run while the
    flood's run beside it shares the CPU (a few argon2 runs), and the event loop's turn after the
    flood's own requests (150 at once take 1-2 s to refuse on a loaded 2-core machine): never less
    than 3 s. Before issue 18: 5.6 s (unknown keys, or a 503) and 57 s (logins) on this machine."""
    return max(3.0, 5 * quiet)


async def keep_sending(send: Any, until: float, statuses: Counter[int]) -> None:
    while time.monotonic() < until:
        try:
            statuses[await send()] += 1
        except aiohttp.ClientError:
            statuses[0] += 1


def test_an_unknown_key_flood_from_40_addresses_costs_no_argon2_and_a_new_key_is_served(
    make_proxy: Any, shared_daemon: Daemon
) -> None:
    proxy = flood_proxy(make_proxy, shared_daemon)
    new_key, quiet = proxy.make_key("new"), quiet_first_use(proxy)
    seconds, per_address = scaled(6, 60), int(scaled(5, 20))
    statuses: Counter[int] = Counter()

    async def flood() -> tuple[int, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def unknown_key(address: str) -> int:
                headers = {"Authorization": f"Bearer {generate_api_key()[0]}", "X-Forwarded-For": address}
                async with session.get(f"{proxy.base_url}/models", headers=headers) as r:
                    await r.read()
                    return r.status

            until = time.monotonic() + seconds
            workers = [
                keep_sending(lambda a=f"10.66.{i}.1": unknown_key(a), until, statuses)  # type: ignore[misc]
                for i in range(40)
                for _ in range(per_address)
            ]
            running = asyncio.gather(*workers)
            await asyncio.sleep(min(2.0, seconds / 3))
            result = await first_use(session, proxy, new_key, "10.200.0.1")
            await running
            return result

    assert proxy.proc is not None
    with peak_rss(proxy.proc.pid) as rss:
        status, latency = asyncio.run(flood())
    runs = argon2_runs(proxy, "key")
    print(
        f"FLOOD unknown keys: {sum(statuses.values())} requests from 40 addresses in {seconds:.0f} s "
        f"({dict(statuses)}), argon2 runs {runs}, "
        f"new key's first request {status} in {latency * 1000:.0f} ms (quiet: {quiet * 1000:.0f} ms), "
        f"proxy RSS {rss[0] >> 20} -> peak {rss[1] >> 20} MB"
    )
    assert status == 200, f"a new valid key got {status} during the flood"  # old code: 503 at once
    assert latency < bound(quiet), f"a new valid key waited {latency:.1f} s (quiet: {quiet:.2f} s)"
    assert set(statuses) <= {401, 429}, statuses  # refusals and slow-downs, never a 503 or a broken connection
    # The quiet key's, the new key's and one calibration: none for the flood.
    assert runs is not None and runs <= 3, f"{runs} argon2 runs for unknown keys"
    assert rss[1] - rss[0] < 160 << 20, f"the proxy grew by {(rss[1] - rss[0]) >> 20} MB"


def test_wrong_secrets_of_real_ids_from_40_addresses_wait_behind_a_new_key(
    make_proxy: Any, shared_daemon: Daemon
) -> None:
    """The costly flood: wrong secrets for public ids that exist (the attacker holds keys of its own),
    each a real argon2 run. The threads go to clean addresses first: a new key does not queue."""
    proxy = flood_proxy(make_proxy, shared_daemon)
    held = [proxy.make_key(f"held{i}") for i in range(4)]
    new_key, quiet = proxy.make_key("new"), quiet_first_use(proxy)
    seconds, per_address = scaled(6, 60), int(scaled(2, 4))
    statuses: Counter[int] = Counter()
    counter = iter(range(10**9))

    async def flood() -> tuple[int, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def wrong_secret(address: str) -> int:
                n = next(counter)
                key = held[n % len(held)][:-8] + f"{n:08d}"
                headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": address}
                async with session.get(f"{proxy.base_url}/models", headers=headers) as r:
                    await r.read()
                    return r.status

            until = time.monotonic() + seconds
            workers = [
                keep_sending(lambda a=f"10.88.{i}.1": wrong_secret(a), until, statuses)  # type: ignore[misc]
                for i in range(40)
                for _ in range(per_address)
            ]
            running = asyncio.gather(*workers)
            await asyncio.sleep(min(3.0, seconds / 2))
            result = await first_use(session, proxy, new_key, "10.200.0.3")
            await running
            return result

    assert proxy.proc is not None
    with peak_rss(proxy.proc.pid) as rss:
        status, latency = asyncio.run(flood())
    runs = argon2_runs(proxy, "key")
    print(
        f"FLOOD wrong secrets of real ids: {sum(statuses.values())} requests from 40 addresses in {seconds:.0f} s "
        f"({dict(statuses)}), argon2 runs {runs}, "
        f"new key's first request {status} in {latency * 1000:.0f} ms (quiet: {quiet * 1000:.0f} ms), "
        f"proxy RSS {rss[0] >> 20} -> peak {rss[1] >> 20} MB"
    )
    assert status == 200 and latency < bound(quiet), (
        f"a new key got {status} after {latency:.1f} s (quiet: {quiet:.2f})"
    )
    assert set(statuses) <= {401, 429}, statuses
    # Two threads at most: the RSS bound is theirs (2 x 64 MiB), whatever the flood.
    assert rss[1] - rss[0] < 160 << 20, f"the proxy grew by {(rss[1] - rss[0]) >> 20} MB"


def add_admin(proxy: Proxy, name: str, password: str) -> None:
    async def create() -> None:
        async with Database.open(proxy.db_path) as db:
            await UserRepository(db).create_user(name, hash_secret(password, create_password_hasher()), "admin")

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()


def test_a_login_flood_is_bounded_before_argon2_and_does_not_delay_keys(make_proxy: Any, shared_daemon: Daemon) -> None:
    proxy = flood_proxy(make_proxy, shared_daemon)
    add_admin(proxy, "alice", "a long and right password")
    new_key, quiet = proxy.make_key("new"), quiet_first_use(proxy)
    logins, addresses = int(scaled(150, 600)), int(scaled(1, 8))
    statuses: Counter[int] = Counter()

    async def flood() -> tuple[int, float, float]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as session:
            async with session.get(f"http://127.0.0.1:{proxy.port}/admin/login") as r:
                found = LOGIN_CSRF.search(await r.text())
                assert found is not None
                csrf = found.group(1)

            async def login(i: int) -> None:
                name = "alice" if i % 2 else f"nobody{i}"
                form = {"username": name, "password": f"guess {i}", "csrf": csrf, "next": "/admin/"}
                headers = {"X-Forwarded-For": f"10.77.{i % addresses}.1"}
                url = f"http://127.0.0.1:{proxy.port}/admin/login"
                try:
                    async with session.post(url, data=form, headers=headers, allow_redirects=False) as r:
                        await r.read()
                        statuses[r.status] += 1
                except aiohttp.ClientError:
                    statuses[0] += 1

            started = time.monotonic()
            running = asyncio.gather(*(login(i) for i in range(logins)))
            await asyncio.sleep(0.3)
            status, latency = await first_use(session, proxy, new_key, "10.200.0.2")
            await running
            return status, latency, time.monotonic() - started

    assert proxy.proc is not None
    with peak_rss(proxy.proc.pid) as rss:
        status, latency, took = asyncio.run(flood())
    runs = argon2_runs(proxy, "login")
    print(
        f"FLOOD logins: {logins} concurrent logins from {addresses} address(es) in {took:.1f} s ({dict(statuses)}), "
        f"login argon2 runs {runs}, "
        f"new key's first request {status} in {latency * 1000:.0f} ms (quiet: {quiet * 1000:.0f} ms), "
        f"proxy RSS {rss[0] >> 20} -> peak {rss[1] >> 20} MB"
    )
    assert status == 200 and latency < bound(quiet), (
        f"a new key got {status} after {latency:.1f} s (quiet: {quiet:.2f})"
    )  # old code: 15 s
    assert statuses[0] == 0 and set(statuses) <= {401, 429}, statuses
    # Per address: ten failures before the address throttle, plus the one attempt in flight beside
    # each; alice's own throttle engages after three. Old code: 133 runs for 150 logins.
    assert runs is not None and runs <= addresses * 12 + 1, f"{runs} argon2 runs for {logins} logins"
    assert rss[1] - rss[0] < 160 << 20, f"the proxy grew by {(rss[1] - rss[0]) >> 20} MB"
