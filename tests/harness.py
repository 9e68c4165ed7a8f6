"""Test helpers: a real runtime daemon and a real proxy as subprocesses, on loopback, with their own files."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from proxy.auth.apikey import key_minter
from runtime.api.client import RuntimeClient
from runtime.backends.demo import demo_model_path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Daemon:
    """A runtime daemon subprocess."""

    endpoint: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self, ready_models: tuple[str, ...] = ("smollm2",), timeout: float = 60.0) -> Daemon:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmserver.commands.runtime", "--endpoint", self.endpoint, *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        # Its own loop in its own thread, so async tests may call start() too.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, wait_ready(self.endpoint, ready_models, timeout, self)).result()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def wait_ready(endpoint: str, models: tuple[str, ...], timeout: float, daemon: Daemon | None = None) -> None:
    end = time.monotonic() + timeout
    async with RuntimeClient(endpoint, connect_wait=0.2) as client:
        while time.monotonic() < end:
            if daemon is not None and not daemon.alive():
                raise RuntimeError(f"daemon exited early:\n{daemon.log_text()}")
            try:
                states = {m.name: m.state for m in await client.models()}
            except Exception:
                await asyncio.sleep(0.1)
                continue
            if all(states.get(m) == "ready" for m in models):
                return
            failed = [m for m in models if states.get(m) == "failed"]
            if failed:
                raise RuntimeError(f"models failed to load: {failed}")
            await asyncio.sleep(0.05)
    raise RuntimeError(f"daemon at {endpoint} not ready in {timeout}s")


def demo_spec(name: str = "smollm2", **params: object) -> str:
    extra = "".join(f",{k}={v}" for k, v in params.items())
    return f"{name}=llamacpp:{demo_model_path()}{extra}"


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSERVER_")}
    env["LLMSERVER_RUNTIME_DIR"] = str(tmp)
    env["PYTHONPATH"] = str(ROOT)
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proxy:
    """A proxy subprocess (``python -m llmserver.commands.proxy``) on a loopback port with its own SQLite file."""

    env: dict[str, str]
    db_path: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> Proxy:
        """Start the proxy and wait until it is ready (``/readyz``: warm-up done), or until it says its
        runtime is unreachable (the tests of a runtime that is down: nothing to wait for)."""
        import json
        import urllib.error
        import urllib.request

        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmserver.commands.proxy"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return self
            except urllib.error.HTTPError as exc:
                if json.loads(exc.read())["checks"].get("runtime") == "unreachable":
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("proxy did not start")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, str]:
        """Wait until ``/readyz`` answers 200 (warm-up done); its checks."""
        import json
        import urllib.error
        import urllib.request

        end = time.monotonic() + timeout
        body: dict[str, dict[str, str]] = {}
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                    return dict(json.loads(r.read())["checks"])
            except urllib.error.HTTPError as exc:
                body = json.loads(exc.read())
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"proxy not ready in {timeout}s: {body}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)

    def make_key(self, name: str = "test", **kw: object) -> str:
        """Create a key in the proxy's database, as an admin would; the full key."""
        from proxy.storage.api_keys import KeyRepository
        from proxy.storage.database import Database

        async def create() -> str:
            async with Database.open(self.db_path) as db:
                full, _ = await KeyRepository(db, key_minter()).create_key(name, **kw)  # type: ignore[arg-type]
                return full

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, create()).result()

    def revoke(self, full_key: str) -> None:
        """Revoke a key the way the admin tools do (another process than the proxy)."""
        from proxy.auth.apikey import parse_api_key
        from proxy.storage.api_keys import KeyRepository
        from proxy.storage.database import Database

        parsed = parse_api_key(full_key)
        assert parsed is not None

        async def revoke() -> None:
            async with Database.open(self.db_path) as db:
                await KeyRepository(db, key_minter()).revoke_key(parsed[0])

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, revoke()).result()

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import sqlite3

        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return list(conn.execute(sql, args))
        finally:
            conn.close()


def proxy_env(tmp: Path, endpoint: str, port: int) -> dict[str, str]:
    env = clean_env(tmp)
    env.update(
        {
            "LLMSERVER_DATABASE_URL": f"sqlite:///{tmp}/app.db",
            "LLMSERVER_BIND_ADDRESS": f"127.0.0.1:{port}",
            "LLMSERVER_RUNTIME_ENDPOINT": endpoint,
            "LLMSERVER_ARGON2_PROFILE": "test",
            "LLMSERVER_MODEL_CONFIG_DIR": str(tmp / "config"),
        }
    )
    return env
