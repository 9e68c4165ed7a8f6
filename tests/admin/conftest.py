"""Fixtures for the admin console: a real proxy (subprocess, real daemon) with the console mounted."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest

from proxy.auth.apikey import create_password_hasher, hash_secret
from proxy.storage.database import Database
from proxy.storage.users import UserRepository
from tests.harness import Daemon, Proxy

SESSION_KEY = "ab" * 64
PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def admin_url(proxy: Proxy, path: str = "/") -> str:
    return f"http://127.0.0.1:{proxy.port}/admin{path}"


def add_user(proxy: Proxy, name: str, role: str = "admin", password: str = PASSWORD) -> int:
    """Create an account in the proxy's database, as ``llmserver admin create-user`` does."""

    async def create() -> int:
        async with Database.open(proxy.db_path) as db:
            hashed = hash_secret(password, create_password_hasher("test"))
            return (await UserRepository(db).create_user(name, hashed, role)).id

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result()


class AdminClient:
    """A browser-like HTTP client of the console: cookies, the CSRF token of the last page."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.http = httpx.Client(base_url=admin_url(proxy, ""), follow_redirects=False, timeout=30)
        self.csrf = ""

    def get(self, path: str, **kw: Any) -> httpx.Response:
        r = self.http.get(path, **kw)
        found = _CSRF.search(r.text)
        if found:
            self.csrf = found.group(1)
        return r

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: str | None = None) -> httpx.Response:
        form = dict(data or {})
        form["csrf"] = self.csrf if csrf is None else csrf
        return self.http.post(path, data=form)

    def follow(self, response: httpx.Response) -> httpx.Response:
        """The page a form's redirect leads to (post/redirect/get, issue 19)."""
        assert response.status_code == 303, (response.status_code, response.text[:300])
        return self.get(response.headers["location"].removeprefix("/admin"))

    def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/login")
        return self.post("/login", {"username": name, "password": password, "next": "/admin/"})

    def cookies(self) -> dict[str, str]:
        return dict(self.http.cookies.items())

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def console(make_proxy: Any, shared_daemon: Daemon) -> Proxy:
    """A proxy with the admin console and one admin account ``alice``."""
    proxy: Proxy = make_proxy(shared_daemon.endpoint, LLMSERVER_SESSION_KEY=SESSION_KEY).start()
    add_user(proxy, "alice")
    return proxy


@pytest.fixture
def admin_client(console: Proxy) -> Any:
    made: list[AdminClient] = []

    def factory() -> AdminClient:
        client = AdminClient(console)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()
