"""``llmserver models ...``: register, download, start, stop and remove models.

The commands change the registry (the database and ``<config dir>/<name>.json``); the proxy's
reconciler does the loading and unloading, within a couple of seconds (``--wait`` waits for it).
``pull`` and ``run`` download in this process with a progress bar. Errors are one readable line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from llmserver.commands.actor import cli_actor
from proxy.errors import ProxyError
from proxy.lifecycle.download import Downloader
from proxy.lifecycle.errors import LifecycleError
from proxy.lifecycle.registry import CHANGEABLE, Registry
from proxy.settings import load_settings
from proxy.storage.database import Database
from proxy.storage.errors import StorageError, ValidationError
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import KINDS, ModelRecord, ModelStore, check_model_name
from runtime.api.models import coerce_value

T = TypeVar("T")
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = subparsers.add_parser("models", help="manage models", description="Register, download and run models.")
    commands = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    add = commands.add_parser("add", help="register a model (from a Hugging Face repository or a local path)")
    add.add_argument("name", type=_name, help="the model's name (letters, digits, . _ -)")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--repo", help="Hugging Face repository id, e.g. org/name-GGUF")
    source.add_argument("--path", help="a model file already on this machine")
    add.add_argument("--file", action="append", default=[], help="a file of the repository (repeatable)")
    add.add_argument("--pattern", action="append", default=[], help="download the files matching (repeatable)")
    add.add_argument("--revision", help="branch, tag or commit to pin (default: main)")
    add.add_argument("--kind", choices=KINDS, default="llm")
    add.add_argument("--backend", help="llamacpp or rkllm (default: from the file name)")
    _common_options(add)
    add.set_defaults(func=add_command)

    pull = commands.add_parser("pull", help="download a registered model's files")
    pull.add_argument("name", type=_name)
    pull.set_defaults(func=pull_command)

    run = commands.add_parser("run", help="register, download and start REPO[:FILE] in one step")
    run.add_argument("spec", metavar="REPO[:FILE]")
    run.add_argument("--name", type=_name, help="the model's name (default: from the file name)")
    _common_options(run)
    _wait_option(run)
    run.set_defaults(func=run_command)

    for verb, doc in (("start", "keep a model loaded"), ("stop", "unload a model"), ("rm", "forget a model")):
        cmd = commands.add_parser(verb, help=doc)
        cmd.add_argument("name", type=_name)
        if verb == "start":
            _wait_option(cmd)
        cmd.set_defaults(func=state_command, verb=verb)

    change = commands.add_parser(
        "set",
        help="change a registered model (as the admin API's PATCH)",
        description=f"Change fields of a registered model: {', '.join(CHANGEABLE)}. A value is JSON when it "
        "parses as JSON (params='{\"n_ctx\": 4096}', keep_alive=300, hf_token_id=null), text otherwise.",
    )
    change.add_argument("name", type=_name)
    change.add_argument("fields", nargs="+", type=_assignment, metavar="KEY=VALUE")
    change.set_defaults(func=set_command)

    commands.add_parser("list", help="the registered models with their state").set_defaults(func=list_command)
    show = commands.add_parser("show", help="one model's record as JSON (its last error included)")
    show.add_argument("name", type=_name)
    show.set_defaults(func=show_command)


def _common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="backend parameter (repeatable)")
    p.add_argument("--token", type=int, metavar="ID", help="the stored Hugging Face token to use (default: default)")
    p.add_argument("--keep-alive", type=float, metavar="SECONDS", help="unload after this long unused")


def _wait_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait until the proxy has loaded it")


def add_command(args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"kind": args.kind, **_model_fields(args)}
    if args.repo:
        fields.update(source_repo=args.repo, files=args.file, patterns=args.pattern, revision=args.revision)
    else:
        fields["local_path"] = args.path
    if args.backend:
        fields["backend"] = args.backend
    record = _run(lambda registry: registry.add(args.name, by=cli_actor(), **fields))
    return _print_record(record, f"registered {args.name}")


def pull_command(args: argparse.Namespace) -> int:
    record = _run(lambda registry: registry.pull(args.name, by=cli_actor()), show_progress=True)
    return _print_record(record, f"downloaded {args.name}")


def run_command(args: argparse.Namespace) -> int:
    async def run(registry: Registry) -> ModelRecord:
        plan = await registry.plan_run(args.spec, args.name, args.token)
        sys.stdout.write(f"running {plan.repo}:{plan.file} as {plan.name} ({plan.reason})\n")
        record = await registry.run(plan, by=cli_actor(), **_model_fields(args))
        return await _wait(registry, record, args.wait)

    return _print_record(_run(run, show_progress=True), "started")


def state_command(args: argparse.Namespace) -> int:
    if args.verb == "rm":
        if _run(lambda registry: registry.remove(args.name, by=cli_actor())) is False:
            return EXIT_ERROR
        sys.stdout.write(f"removed {args.name} (downloaded files stay in the cache)\n")
        return 0

    async def act(registry: Registry) -> ModelRecord:
        by = cli_actor()
        record = await (registry.start(args.name, by=by) if args.verb == "start" else registry.stop(args.name, by=by))
        return await _wait(registry, record, getattr(args, "wait", 0))

    wanted = "running" if args.verb == "start" else "stopped"
    return _print_record(_run(act), f"{args.name}: wanted {wanted}")


def set_command(args: argparse.Namespace) -> int:
    fields = dict(args.fields)

    record = _run(lambda registry: registry.set_fields(args.name, by=cli_actor(), **fields))
    return _print_record(record, f"changed {', '.join(fields)} of {args.name}")


def _assignment(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


async def _settled_list(registry: Registry) -> list[ModelRecord]:
    await registry.settle_pulls()  # a pull whose process died says so (issue 25)
    return await registry.store.list()


def list_command(args: argparse.Namespace) -> int:
    records = _run(_settled_list)
    if not isinstance(records, list):
        return EXIT_ERROR
    header = ("NAME", "KIND", "BACKEND", "WANTED", "STATE", "DOWNLOAD", "SOURCE", "ERROR")
    rows = [header] + [_row(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        sys.stdout.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


def show_command(args: argparse.Namespace) -> int:
    async def show(registry: Registry) -> ModelRecord:
        await registry.settle_pulls()
        return await registry.store.get(args.name)

    record = _run(show)
    if not isinstance(record, ModelRecord):
        return EXIT_ERROR
    sys.stdout.write(json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
    return 0


def _row(r: ModelRecord) -> tuple[str, ...]:
    download = r.download_state
    if r.download_state == "downloading" and r.download_progress is not None:
        download = f"{r.download_progress:.0%}"
    source = r.source_repo or r.local_path or "-"
    if r.from_runtime:
        source += " (--model)"
    return (r.name, r.kind, r.backend, r.desired_state, r.actual_state, download, source, (r.error or "")[:60])


async def _wait(registry: Registry, record: ModelRecord, seconds: float) -> ModelRecord:
    end = time.monotonic() + seconds
    target = "running" if record.desired_state == "running" else "stopped"
    while time.monotonic() < end and record.actual_state not in (target, "failed"):
        await asyncio.sleep(0.2)
        record = await registry.store.get(record.name)
    return record


def _model_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if args.param:
        fields["params"] = dict(_param(p) for p in args.param)
    if args.token is not None:
        fields["hf_token_id"] = args.token
    if args.keep_alive is not None:
        fields["keep_alive"] = args.keep_alive
    return fields


def _param(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"llmserver models: error: --param {text!r} is not KEY=VALUE")
    return key.strip(), coerce_value(value.strip())


def _print_record(record: object, what: str) -> int:
    if not isinstance(record, ModelRecord):
        return EXIT_ERROR
    state = f"wanted {record.desired_state}, now {record.actual_state}"
    sys.stdout.write(f"{what}: {record.name} ({state}; config {record.name}.json)\n")
    if record.error:
        sys.stdout.write(f"last error: {record.error}\n")
    return 0 if record.actual_state != "failed" else EXIT_ERROR


def _name(text: str) -> str:
    try:
        return check_model_name(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _run(action: Callable[[Registry], Awaitable[T]], show_progress: bool = False) -> T | bool | None:
    """The action's result; False (after one line on stderr) when it failed."""
    try:
        return asyncio.run(_with_registry(action, show_progress))
    except (ProxyError, StorageError, LifecycleError, sqlite3.Error, OSError) as exc:
        sys.stderr.write(f"llmserver models: error: {exc}\n")
        return False


async def _with_registry(action: Callable[[Registry], Awaitable[T]], show_progress: bool) -> T:
    settings = load_settings()
    vault = settings.vault() if settings.encryption_key else None
    async with Database.open(settings.database_path, readers=1, synchronous=settings.db_synchronous) as db:
        registry = Registry(
            ModelStore(db, settings.model_config_dir),
            TokenStore(db, vault),
            Downloader(settings.hf_cache, show_progress=show_progress),
        )
        return await action(registry)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmserver")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
