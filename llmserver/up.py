"""``llmserver up``: the runtime daemon and the proxy together, on embedded defaults.

Starts the daemon as a child process (with the demo model unless ``--model`` is
given), waits until its models are ready, generates missing secrets into a 0600
file, creates a first API key when the database has none, prints how to make a
first request, then serves the proxy until Ctrl-C (which stops the daemon too). While it serves,
the daemon is supervised (:mod:`llmserver.supervision.restart`): restarted with back-off if it dies. Start-up
problems (a read-only data directory, the port already taken, a live daemon already answering on the
runtime endpoint) are one sentence naming the path or the setting, checked before the daemon starts
where possible and never leaving it behind. The daemon dies with ``up`` even when ``up`` is killed
with SIGKILL (:mod:`llmserver.supervision.parent`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from llmserver.commands.actor import UP
from llmserver.commands.admin import first_admin
from llmserver.envfile import secrets_file
from llmserver.logging import setup_logging
from llmserver.serve import ServeError
from llmserver.supervision.restart import Supervisor
from proxy.auth.apikey import key_minter
from proxy.settings import Settings, checked_settings
from proxy.storage.api_keys import KeyRepository
from proxy.storage.database import Database
from proxy.storage.errors import StorageError
from runtime.api.client import RuntimeClient
from runtime.api.errors import RuntimeClientError
from runtime.api.probe import probe_endpoint
from runtime.api.state import FAILED, READY

_SECRETS = {"LLMSERVER_ENCRYPTION_KEY": 32, "LLMSERVER_SESSION_KEY": 64}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("up", help="start the runtime and the proxy together on their defaults")
    parser.set_defaults(func=run_up)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=BACKEND:PATH[,key=value...]",
        help="models for the runtime (repeatable); default: the bundled demo model",
    )
    parser.add_argument("--bind", help="address:port for the proxy (default 127.0.0.1:8443)")


def run_up(args: argparse.Namespace) -> int:
    if args.bind:
        os.environ["LLMSERVER_BIND_ADDRESS"] = args.bind
    os.environ.setdefault("LLMSERVER_BIND_ADDRESS", "127.0.0.1:8443")
    secrets_path = secrets_file()  # the data directory's: where the operator's commands find it too
    try:
        load_secrets(secrets_path)
    except OSError as exc:
        return _fail(f"cannot write the secrets file {secrets_path}: {exc.strerror or exc}")
    settings = checked_settings("llmserver up")
    if settings is None:
        return 2
    setup_logging(settings)
    problem = port_problem(settings)
    if problem:
        return _fail(problem)
    try:
        key, account = asyncio.run(first_key(settings))  # the database first: its problems need no daemon
    except StorageError as exc:
        return _fail(str(exc))
    # SIGTERM before the proxy serves (it then handles it itself) must still stop the daemon.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    other = probe_endpoint(settings.runtime_endpoint)  # an orphan of an earlier up, or another up
    if other is not None:
        return _fail(other.refusal())
    daemon = start_daemon(settings, args.model)
    try:
        names = asyncio.run(wait_for_models(settings.runtime_endpoint, daemon.proc))
        daemon.watch()
        from llmserver.serve import serve

        serve(settings, print_ready=banner(settings, names, key, account))
    except DaemonFailed as exc:
        return _fail(f"the runtime did not start: {exc}")
    except ServeError as exc:
        return _fail(str(exc))
    finally:
        daemon.stop()
    return 0


def _fail(message: str) -> int:
    sys.stderr.write(f"llmserver up: {message}\n")
    return 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def port_problem(settings: Settings) -> str | None:
    """A sentence if the proxy's address cannot be bound (checked before the daemon starts)."""
    family = socket.AF_INET6 if ":" in settings.bind_host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.bind_host, settings.bind_port))
        except OSError as exc:
            address = f"LLMSERVER_BIND_ADDRESS={settings.bind_host}:{settings.bind_port}"
            if exc.errno == errno.EADDRINUSE:
                return f"{address}: the port is already in use by another program"
            return f"{address}: cannot listen there ({exc.strerror or exc})"
    return None


def load_secrets(path: Path) -> None:
    """Use the secrets in ``path``; generate the missing ones into it (mode 0600)."""
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                stored[name.strip()] = value.strip()
    missing = [n for n in _SECRETS if n not in stored and not os.environ.get(n)]
    if missing:
        for name in missing:
            stored[name] = secrets.token_hex(_SECRETS[name])
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in stored.items()))
    for name, value in stored.items():
        os.environ.setdefault(name, value)


class DaemonFailed(Exception):
    pass


def start_daemon(settings: Settings, models: list[str]) -> Supervisor:
    """The daemon as a supervised child (restarted once :meth:`Supervisor.watch` is called) that
    stops when this process dies, even by SIGKILL (:mod:`llmserver.supervision.parent`)."""
    argv = [sys.executable, "-m", "llmserver.commands.runtime", "--endpoint", settings.runtime_endpoint]
    for spec in models:
        argv += ["--model", spec]
    argv += ["--parent-pid", str(os.getpid())]
    return Supervisor(argv).start()


async def wait_for_models(endpoint: str, daemon: subprocess.Popen[bytes], timeout: float = 180) -> list[str]:
    end = time.monotonic() + timeout
    async with RuntimeClient(endpoint, connect_wait=0.2) as client:
        while time.monotonic() < end:
            if daemon.poll() is not None:
                raise DaemonFailed(f"it exited with status {daemon.returncode}")
            try:
                hello = await client.hello()
            except RuntimeClientError:
                await asyncio.sleep(0.1)
                continue
            if hello.pid != daemon.pid:  # another daemon took the endpoint meanwhile: ours refuses
                await asyncio.sleep(0.1)
                continue
            models = hello.models
            # The daemon registers its start-up models before it answers anything: an empty list
            # is final (nothing configured and no demo package), not "not yet".
            if all(m.state in (READY, FAILED) for m in models):
                failed = [f"{m.name}: {m.error}" for m in models if m.state == FAILED]
                if failed:
                    raise DaemonFailed("; ".join(failed))
                return [m.name for m in models]
            await asyncio.sleep(0.1)
    raise DaemonFailed(f"models not ready after {timeout:.0f}s")


async def first_key(settings: Settings) -> tuple[str | None, tuple[str, str] | None]:
    """A new key named 'first key' when the database has no usable key, and a first admin account
    (name, generated password) when it has no account; None for what already existed."""
    async with Database.open(settings.database_path) as db:
        account = await first_admin(db, settings.argon2_profile)
        repo = KeyRepository(db, key_minter())
        if any(k.is_active(time.time()) for k in await repo.list_keys()):
            return None, account
        full, _ = await repo.create_key("first key", by=UP)
        return full, account


def banner(settings: Settings, models: list[str], key: str | None, account: tuple[str, str] | None = None) -> str:
    scheme = "https" if settings.tls_enabled else "http"
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else settings.bind_host
    base = f"{scheme}://{host}:{settings.bind_port}/v1"
    shown = key or "YOUR_KEY"
    model = models[0] if models else "MODEL"
    serving = ", ".join(models) if models else "no models (none configured and the demo package is missing)"
    lines = [
        f"llmserver is up: {base} serving {serving}",
        "",
        f"Your first API key (shown once, store it now): {key}"
        if key
        else "Create an API key with: llmserver keys create --name myapp",
        "",
        "First request:",
        f"  curl {base}/chat/completions -H 'Authorization: Bearer {shown}' \\",
        "    -H 'Content-Type: application/json' \\",
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'',
        "",
        f'Or with the openai SDK: OpenAI(base_url="{base}", api_key="{shown}")',
        "",
        f"Admin console: {base[: -len('/v1')]}/admin/",
    ]
    if account is not None:
        lines.append(f"First admin account (password shown once, store it now): {account[0]} / {account[1]}")
    lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)
