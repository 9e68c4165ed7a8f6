"""The model registry: what an admin does to a model (add, pull, start, stop, remove, run).

The command line and the admin API both go through :class:`Registry`, so a model behaves the same
whichever way it is handled. The registry changes the desired state; the reconciler (if one runs in
this process, ``on_change`` pokes it; the proxy's own polls the database otherwise) does the
loading. A pull runs in a thread; while it runs its progress is written to the row (at most twice a
second) so that every process, the admin console's page included, sees it move.

A pull's row names its process and when it last wrote progress (issue 25): a pull whose process is
gone (killed, the machine restarted) is marked ``interrupted`` by :meth:`Registry.settle_pulls`
(the proxy at start-up and every few seconds, the CLI before it lists), and a re-pull continues
where it stopped. Run's "start once downloaded" is a column, so it survives the process that asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.lifecycle.download import Downloader, Fetched, Progress
from proxy.lifecycle.errors import DownloadCancelledError, DownloadError, LifecycleError, ModelStateError
from proxy.lifecycle.params import check_model_params
from proxy.lifecycle.quant import pick_gguf
from proxy.storage.audit import Actor, Audit, record_event
from proxy.storage.errors import StorageError, ValidationError
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import ModelRecord, ModelStore, check_model_fields, check_model_name

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between progress writes to the row
PULL_SILENCE = 60.0  # a pull that wrote no progress for this long is taken for dead
REMOTE_KINDS = ("tts", "stt")  # served by the inference service: nothing to download or load
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BACKEND_BY_SUFFIX = {".gguf": "llamacpp", ".rkllm": "rkllm"}
# What a caller (CLI, console, API) may set: at registration, and later. The rest of a row (states,
# progress, errors, back-off) belongs to the registry and the reconciler.
CHANGEABLE = ("backend", "files", "patterns", "revision", "local_path", "params", "hf_token_id", "keep_alive")
ADDABLE = ("kind", "source_repo", *CHANGEABLE)


@dataclass(frozen=True)
class RunPlan:
    """What ``run REPO[:FILE]`` decided: the model name, the file, and why that file."""

    name: str
    repo: str
    file: str
    reason: str


class Registry:
    def __init__(
        self,
        store: ModelStore,
        tokens: TokenStore,
        downloader: Downloader,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.downloader = downloader
        self._on_change = on_change or (lambda: None)
        self._cancels: dict[str, threading.Event] = {}

    # -- registering ----------------------------------------------------------------------------

    async def add(
        self, name: str, /, *, by: Actor | None = None, action: str = "model.add", **fields: Any
    ) -> ModelRecord:
        """Register a model from a repository (``source_repo`` + ``files``/``patterns``) or a ``local_path``.

        ``by`` (here and below): the admin who asked, audited in the same transaction as the change."""
        check_model_name(name)
        _only(fields, ADDABLE, "these fields cannot be given to a new model")
        check_model_fields(fields)  # bounded before anything here reads them
        if fields.get("kind", "llm") == "llm":
            if not fields.get("source_repo") and not fields.get("local_path"):
                raise ValidationError("a model needs a source: a Hugging Face repository or a local path")
            if fields.get("local_path") and not fields.get("source_repo"):
                fields.setdefault("download_state", "local")
        if fields.get("source_repo") is not None:
            check_repo_id(fields["source_repo"])
        if fields.get("hf_token_id") is not None:
            await self.tokens.get(fields["hf_token_id"])  # a valid id that exists, or an error naming it
        if "backend" not in fields:
            fields["backend"] = _backend_for(fields)
        check_model_params(fields.get("params") or {}, fields["backend"], fields.get("kind", "llm"))
        record = await self.store.create(name, by=by, action=action, **fields)
        log.info("model %s registered", name)
        return record

    async def plan_run(self, spec: str, name: str | None = None, token_id: int | None = None) -> RunPlan:
        """``REPO[:FILE]`` -> which file to run; a repository with several GGUF files gets a quantisation picked."""
        repo, _, file = spec.partition(":")
        check_repo_id(repo)
        reason = "as asked"
        if not file:
            token = await self.tokens.reveal(token_id)
            listing = await asyncio.to_thread(self.downloader.list_files, repo, None, token)
            picked = pick_gguf([f.name for f in listing.files], {f.name: f.size for f in listing.files})
            if picked is None:
                raise DownloadError(f"{repo} has no single-file GGUF model; name the file: {repo}:FILE")
            file, reason = picked
        return RunPlan(name or _name_for(repo, file), repo, file, reason)

    async def begin_run(self, plan: RunPlan, *, by: Actor | None = None, **fields: Any) -> bool:
        """The part of :meth:`run` a request waits for: register the model if new, and ask for its start
        (``start_when_downloaded``), audited as ``model.run``; whether it was registered now."""
        created = await self.store.find(plan.name) is None
        if created:
            await self.add(plan.name, by=by, action="model.run", source_repo=plan.repo, files=[plan.file], **fields)
        await self.store.update(plan.name, by=None if created else by, action="model.run", start_when_downloaded=True)
        return created

    async def run(
        self,
        plan: RunPlan,
        progress: Progress | None = None,
        *,
        forget_on_failure: bool = False,
        by: Actor | None = None,
        **fields: Any,
    ) -> ModelRecord:
        """Register (if new), download and start: the "Run model" button.

        The start is asked for first (``start_when_downloaded``), so a pull finished by another process
        after this one died still starts the model. A model registered for this run (here, or by the
        caller after :meth:`begin_run`: ``forget_on_failure``) is forgotten again when its download fails."""
        if await self.begin_run(plan, by=by, **fields):
            forget_on_failure = True
        try:
            await self.pull(plan.name, progress)
        except LifecycleError:
            if forget_on_failure:
                await self.store.delete(plan.name)
                log.info("model %s forgotten: the run that registered it failed", plan.name)
            raise
        return await self.start(plan.name)

    # -- downloading ----------------------------------------------------------------------------

    async def pull(self, name: str, progress: Progress | None = None, *, by: Actor | None = None) -> ModelRecord:
        """Download the model's files; the row says ``downloading`` with progress, then the result."""
        record = await self.store.get(name)
        if not record.source_repo:
            raise ModelStateError(f"model {name!r} has a local path, nothing to download")
        if name in self._cancels:
            raise ModelStateError(f"model {name!r} is already downloading")
        token = await self.tokens.reveal(record.hf_token_id)
        cancel = self._cancels[name] = threading.Event()
        seen: dict[str, int] = {"done": 0, "total": record.total_bytes or 0}

        def report(done: int, total: int) -> None:
            seen["done"], seen["total"] = done, total
            if progress is not None:
                progress(done, total)

        try:
            await self.store.update(
                name,
                by=by,
                action="model.pull",
                download_state="downloading",
                download_progress=0.0,
                downloaded_bytes=0,
                error=None,
                download_pid=os.getpid(),
                download_heartbeat=time.time(),
            )
        except BaseException:
            self._cancels.pop(name, None)
            raise
        work = asyncio.ensure_future(asyncio.to_thread(self._fetch, record, token, report, cancel))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=PROGRESS_EVERY)
                await self._write_progress(name, seen)
            fetched = work.result()
        except asyncio.CancelledError:  # Ctrl-C, or the process shutting down: stop the thread too
            cancel.set()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._cancelled(name))
            raise
        except DownloadCancelledError:
            await self._cancelled(name)
            raise
        except (LifecycleError, StorageError) as exc:
            await self._pull_failed(record, exc)
            raise
        finally:
            self._cancels.pop(name, None)
        return await self._downloaded(name, fetched)

    async def _pull_failed(self, before: ModelRecord, exc: Exception) -> None:
        """A failed pull; a download that was complete before it stays ready (issue 25)."""
        intact = before.download_state == "done" and before.local_path and os.path.exists(before.local_path)
        if intact:
            error = f"a new pull failed ({exc}); the files downloaded before are kept and used"
            await self.store.update(
                before.name,
                download_state="done",
                download_progress=1.0,
                downloaded_bytes=before.downloaded_bytes,
                total_bytes=before.total_bytes,
                error=error,
                download_pid=None,
            )
        else:
            await self.store.update(before.name, download_state="failed", error=str(exc), download_pid=None)

    async def _cancelled(self, name: str) -> None:
        await self.store.update(
            name,
            download_state="cancelled",
            error="the download was cancelled",
            download_pid=None,
            start_when_downloaded=False,
        )

    def _fetch(self, record: ModelRecord, token: str | None, report: Progress, cancel: threading.Event) -> Fetched:
        return self.downloader.fetch(
            str(record.source_repo),
            files=record.files,
            patterns=record.patterns,
            revision=record.revision,
            token=token,
            progress=report,
            cancel=cancel,
        )

    async def _write_progress(self, name: str, seen: dict[str, int]) -> None:
        total = seen["total"]
        fraction = min(1.0, seen["done"] / total) if total else 0.0
        await self.store.update(
            name,
            download_progress=fraction,
            downloaded_bytes=seen["done"],
            total_bytes=total,
            download_heartbeat=time.time(),
        )

    async def _downloaded(self, name: str, fetched: Fetched) -> ModelRecord:
        record = await self.store.update(
            name,
            download_state="done",
            download_progress=1.0,
            downloaded_bytes=fetched.size,
            total_bytes=fetched.size,
            size_bytes=fetched.size,
            sha256=fetched.sha256,
            local_path=str(fetched.path),
            revision=fetched.commit,
            error=None,
            failures=0,
            retry_at=None,
            download_pid=None,
        )
        log.info("model %s downloaded (%d bytes) to %s", name, fetched.size, fetched.path)
        if record.start_when_downloaded:
            return await self.start(name)
        self._on_change()
        return record

    def cancel(self, name: str) -> bool:
        """Ask a running pull to stop; False if none runs in this process."""
        event = self._cancels.get(check_model_name(name))
        if event is None:
            return False
        event.set()
        return True

    async def cancel_pull(self, name: str, *, by: Actor | None = None) -> bool:
        """:meth:`cancel`, audited as ``model.cancel`` first (the pull itself writes ``cancelled`` as it
        stops): a cancel whose audit row cannot be written is not made."""
        if check_model_name(name) not in self._cancels:
            return False
        if by is not None:
            await record_event(self.store.db, by, Audit("model.cancel", f"model {name}", after={"name": name}))
        return self.cancel(name)

    async def settle_pulls(self) -> list[str]:
        """Mark ``interrupted`` the pulls whose process is gone or silent; their names.

        The row says where it stopped and that a pull continues from there; a pending start stays."""
        settled = []
        for record in await self.store.list():
            if record.download_state != "downloading" or record.name in self._cancels or _pull_alive(record):
                continue
            done = f"{record.download_progress:.0%}" if record.download_progress is not None else "the start"
            then = "; the model starts once it is downloaded" if record.start_when_downloaded else ""
            await self.store.update(
                record.name,
                download_state="interrupted",
                download_pid=None,
                error=f"the download stopped at {done} when the process running it ended: pull again to "
                f"continue where it stopped{then}",
            )
            log.warning(
                "model %s: its download was interrupted at %s (the process running it ended)", record.name, done
            )
            settled.append(record.name)
        return settled

    # -- desired state --------------------------------------------------------------------------

    async def start(self, name: str, *, by: Actor | None = None) -> ModelRecord:
        record = await self.store.get(name)
        if record.kind == "llm" and record.download_state == "downloading":
            raise ModelStateError(f"model {name!r} is downloading: it can start once its download is done")
        if record.kind == "llm" and not record.local_path:
            raise ModelStateError(f"model {name!r} is not downloaded yet: pull it first")
        return await self._want(name, "running", by, error=None)

    async def stop(self, name: str, *, by: Actor | None = None) -> ModelRecord:
        return await self._want(name, "stopped", by)

    async def _want(self, name: str, state: str, by: Actor | None, **extra: Any) -> ModelRecord:
        action = "model.start" if state == "running" else "model.stop"
        fields = {"desired_state": state, "failures": 0, "retry_at": None, "start_when_downloaded": False, **extra}
        record = await self.store.update(name, by=by, action=action, **fields)
        self._on_change()
        return record

    async def remove(self, name: str, *, by: Actor | None = None) -> None:
        """Forget the model (the reconciler unloads it); downloaded files stay in the shared cache."""
        self.cancel(name)
        await self.store.delete(name, by=by)
        self._on_change()

    async def delete_token(self, token_id: int, *, by: Actor | None = None) -> None:
        """Delete a stored token; models that named it fall back to the default (config files follow)."""
        await self.tokens.delete(token_id, by=by)
        await self.store.sync_files()

    async def set_fields(self, name: str, /, *, by: Actor | None = None, **fields: Any) -> ModelRecord:
        """Change params, keep-alive, token... of a registered model."""
        _only(fields, CHANGEABLE, "these fields cannot be changed")
        check_model_fields(fields)  # bounded before the parameters' own checks read them
        if fields.get("hf_token_id") is not None:
            await self.tokens.get(fields["hf_token_id"])  # a valid id that exists, or an error naming it
        if fields.get("params") is not None:
            before = await self.store.get(name)
            check_model_params(fields["params"], fields.get("backend") or before.backend, before.kind)
        record = await self.store.update(name, by=by, **fields)
        self._on_change()
        return record


def _pull_alive(record: ModelRecord) -> bool:
    """Whether the process that started this pull still runs it (exists, and wrote progress lately)."""
    if record.download_pid is None or record.download_heartbeat is None:
        return False
    if time.time() - record.download_heartbeat > PULL_SILENCE:
        return False
    try:
        os.kill(record.download_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def _only(fields: dict[str, Any], allowed: Sequence[str], why: str) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValidationError(f"{why}: {', '.join(unknown)}", field=unknown[0])


def check_repo_id(repo: object) -> str:
    """``org/name`` as the Hub spells repository ids; nothing that could climb out of the cache."""
    if not isinstance(repo, str) or not _REPO.match(repo) or ".." in repo:
        shown = repr(repo)[:120]
        raise ValidationError(
            f"{shown}: expected a Hugging Face repository id like org/name (optionally :FILE)", field="source_repo"
        )
    return repo


def _backend_for(fields: dict[str, Any]) -> str:
    names: Sequence[str] = [*list(fields.get("files") or []), str(fields.get("local_path") or "")]
    for n in names:
        for suffix, backend in _BACKEND_BY_SUFFIX.items():
            if n.lower().endswith(suffix):
                return backend
    return "remote" if fields.get("kind") in REMOTE_KINDS else "llamacpp"


def _name_for(repo: str, file: str) -> str:
    """A model name from the file (``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct.q4_1``)."""
    stem = file.rsplit("/", 1)[-1]
    for suffix in _BACKEND_BY_SUFFIX:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in stem.lower()).strip(".-_")
    cleaned = cleaned.replace("..", ".")[:64] or repo.split("/")[-1].lower()[:64]
    return check_model_name(cleaned)
