"""The reconciler: make the runtime hold what the database says should run.

The desired state of every model is a column of its row; the actual state is what the runtime's
``hello`` reports (its models with their states, and its boot id). Each pass compares the two and
acts: load what should run and is not loaded, unload what should not run, record what the runtime
says on the row (``running``, ``loading``, ``failed`` with the error). A pass runs at start-up, every
``interval`` seconds, at once after an admin action (:meth:`Reconciler.kick`), and when the boot id
changes (the runtime restarted and lost its models). Loads run as tasks, so one slow model does not
hold up the others.

Back-off: a load that fails sets the row's error, counts the failure and waits 2, 4, 8... seconds
(at most 5 minutes) before the next try; a runtime restart or an admin action starts over. Models
the runtime was started with (``--model``) are registered on sight, marked ``from_runtime``.
A TTS or STT model is served by the inference service (wanting one running only marks it running),
unless its backend is a local speech backend (``piper``, ``whisper``: issue 23): that one is loaded,
unloaded and idled in the runtime like a text model.

A model whose row holds a value no check lets in (``keep_alive`` stored as the text ``'inf'`` by an
older version) is logged once and left alone; any other model's failure is logged and the pass goes
on, so one row never stops the loop for the others.

A model whose parameters were changed while it was loaded is loaded again with them once it is not
busy (the runtime reports the parameters each model was loaded with).

Idle unload: a model with a ``keep_alive`` that has not been asked for during that many seconds
(and has nothing queued or running) is unloaded and marked ``idle``. :meth:`ensure` (called by
admission for every request) notes the use and, for an idle model, loads it and waits, so the
request is served after a slower first token instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import Any, Protocol

from proxy.storage.errors import ModelNotFoundError, StorageError, ValidationError
from proxy.storage.models import ModelRecord, ModelStore, check_model_name
from runtime.api.errors import RuntimeClientError, RuntimeRequestError
from runtime.api.models import ModelConfig
from runtime.api.state import FAILED, LOADING, READY, Hello, ModelState

log = logging.getLogger(__name__)

LOCAL_SPEECH_BACKENDS = ("piper", "whisper")  # speech models the runtime loads (the others are remote)
MAX_BACKOFF = 300.0
LOAD_TIMEOUT = 600.0


class RuntimeControl(Protocol):
    """What the reconciler needs of the runtime client."""

    async def hello(self) -> Hello: ...

    async def load(self, config: ModelConfig, timeout: float = 300.0) -> ModelState: ...

    async def unload(self, name: str) -> None: ...


class Reconciler:
    def __init__(self, store: ModelStore, runtime: RuntimeControl, interval: float = 2.0) -> None:
        self.store = store
        self.runtime = runtime
        self.interval = interval
        self._wake = asyncio.Event()
        self._boot_id: str | None = None
        self._loads: dict[str, asyncio.Task[bool]] = {}
        self._used: dict[str, float] = {}
        self._idle: set[str] = set()
        self._pass_lock = asyncio.Lock()
        self._restarted = False
        self._known: set[str] = set()  # registered names as of the last pass
        self._refused: set[str] = set()  # models with invalid stored values, said once

    def kick(self) -> None:
        """Run a pass soon (after an admin action)."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except StorageError as exc:  # the database or the config directory: said once per pass
                log.warning("reconcile pass failed: %s", exc)
            except Exception:  # the next pass tries again; a bug must not stop the loop
                log.exception("reconcile pass failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    async def close(self) -> None:
        for task in list(self._loads.values()):
            task.cancel()
        for task in list(self._loads.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- one pass -------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        async with self._pass_lock:
            try:
                hello = await self.runtime.hello()
            except RuntimeClientError as exc:
                log.debug("runtime not reachable: %s", exc)
                return
            self._note_boot(hello.boot_id)
            loaded = {m.name: m for m in hello.models}
            records = await self.store.list()
            await self._unload_removed(loaded, {r.name for r in records})
            await self._adopt(loaded)
            records = await self.store.list()
            for record in records:
                await self._converge_one(record, loaded.get(record.name))
            self._known = {r.name for r in records}
            self._restarted = False

    def _note_boot(self, boot_id: str) -> None:
        if self._boot_id is not None and boot_id != self._boot_id:
            log.info("the runtime restarted (boot id %s): loading its models again", boot_id[:8])
            self._idle.clear()
            self._restarted = True
        self._boot_id = boot_id

    async def _adopt(self, loaded: dict[str, ModelState]) -> None:
        """Register models the runtime holds that the registry does not know (``--model``)."""
        for name, info in loaded.items():
            if await self.store.find(name) is not None:
                continue
            try:
                check_model_name(name)
            except ValidationError:
                log.warning("runtime model %r has a name the registry refuses; not registered", name)
                continue
            with contextlib.suppress(ValidationError):  # another process registered it just now
                await self.store.create(
                    name,
                    kind=info.kind,
                    backend=info.backend or "llamacpp",
                    local_path=info.path or None,
                    params=dict(info.params),
                    desired_state="running",
                    actual_state=_actual(info),
                    download_state="local",
                    from_runtime=True,
                )
                log.info("model %s (started by the runtime's --model) registered", name)

    async def _converge_one(self, record: ModelRecord, info: ModelState | None) -> None:
        """One model's step; whatever goes wrong with it is logged and the pass goes on to the next
        (a bad row must not stop the reconciler for every model, issue 19)."""
        if record.invalid:
            if record.name not in self._refused:
                self._refused.add(record.name)
                log.warning(
                    "model %s holds invalid %s: left alone until an admin sets them again",
                    record.name,
                    ", ".join(record.invalid),
                )
            return
        self._refused.discard(record.name)
        try:
            await self._converge(record, info)
        except StorageError as exc:
            log.warning("reconciling model %s failed: %s", record.name, exc)
        except Exception:
            log.exception("reconciling model %s failed", record.name)

    async def _converge(self, record: ModelRecord, info: ModelState | None) -> None:
        name = record.name
        if record.kind != "llm" and record.backend not in LOCAL_SPEECH_BACKENDS:
            want = "running" if record.desired_state == "running" else "stopped"
            await self._set(record, actual_state=want)
            return
        if record.desired_state != "running":
            self._idle.discard(name)
            if info is not None and name not in self._loads:
                await self._unload(name)
            await self._set(record, actual_state="stopped")
            return
        if info is not None and info.state in (READY, LOADING):
            self._idle.discard(name)
            if _params_changed(record, info):
                await self._reload(record, info)
                return
            await self._running(record, info)
            return
        if name in self._idle or name in self._loads:
            return
        if record.retry_at is not None and time.time() < record.retry_at and not self._restarted:
            return
        self._start_load(record)

    async def _running(self, record: ModelRecord, info: ModelState) -> None:
        state = _actual(info)
        if state == "running":
            await self._set(record, actual_state="running", error=None, failures=0, retry_at=None)
            await self._maybe_idle(record, info)
        else:
            await self._set(record, actual_state=state)

    async def _reload(self, record: ModelRecord, info: ModelState) -> None:
        """The model's parameters were changed (the console's edit page, ``models set``): load it again
        with them once it has nothing queued or running (issue 19)."""
        if info.busy or record.name in self._loads:
            return
        log.info("model %s: its parameters changed; loading it again with them", record.name)
        await self._unload(record.name)
        self._start_load(record)

    async def _maybe_idle(self, record: ModelRecord, info: ModelState) -> None:
        if record.keep_alive is None:
            return
        if info.busy:  # busy now: the keep-alive counts from its end
            self._used[record.name] = time.monotonic()
            return
        last = self._used.setdefault(record.name, time.monotonic())
        if time.monotonic() - last < record.keep_alive:
            return
        log.info("model %s idle for %.0f s: unloading it until the next request", record.name, record.keep_alive)
        self._idle.add(record.name)
        await self._unload(record.name)
        await self._set(record, actual_state="idle")

    async def _unload_removed(self, loaded: dict[str, ModelState], registered: set[str]) -> None:
        """A model removed from the registry since the last pass is unloaded (and not adopted again)."""
        for name in list(loaded):
            if name in self._known and name not in registered and name not in self._loads:
                await self._unload(name)
                del loaded[name]

    # -- loading --------------------------------------------------------------------------------

    def _start_load(self, record: ModelRecord) -> asyncio.Task[bool]:
        task = asyncio.ensure_future(self._load(record))
        self._loads[record.name] = task
        task.add_done_callback(functools.partial(self._load_done, record.name))
        return task

    def _load_done(self, name: str, _task: asyncio.Task[bool]) -> None:
        self._loads.pop(name, None)

    async def _load(self, record: ModelRecord) -> bool:
        name = record.name
        if not record.local_path:
            await self._failed(record, "the model is not downloaded: pull it first")
            return False
        await self._set(record, actual_state="loading")
        config = ModelConfig(name=name, backend=record.backend, path=record.local_path, params=dict(record.params))
        try:
            await self.runtime.load(config, timeout=LOAD_TIMEOUT)
        except RuntimeRequestError as exc:
            await self._failed(record, exc.message)
            return False
        except RuntimeClientError as exc:
            log.warning("loading %s: runtime unavailable (%s); the next pass tries again", name, exc)
            return False
        self._used[name] = time.monotonic()
        self._idle.discard(name)
        await self._set(await self.store.get(name), actual_state="running", error=None, failures=0, retry_at=None)
        log.info("model %s loaded", name)
        return True

    async def _failed(self, record: ModelRecord, message: str) -> None:
        fresh = await self.store.find(record.name)
        failures = (fresh.failures if fresh else record.failures) + 1
        wait = min(MAX_BACKOFF, 2.0**failures)
        log.warning(
            "model %s failed to load (%d in a row; next try in %.0f s): %s", record.name, failures, wait, message
        )
        if fresh is not None:
            await self._set(fresh, actual_state="failed", error=message, failures=failures, retry_at=time.time() + wait)

    async def _unload(self, name: str) -> None:
        try:
            await self.runtime.unload(name)
        except RuntimeClientError as exc:
            log.debug("unloading %s: %s", name, exc)

    async def _set(self, record: ModelRecord, **fields: Any) -> None:
        """Write ``fields`` only when they change something (the config file follows the row)."""
        changed = {k: v for k, v in fields.items() if getattr(record, k) != v}
        if changed:
            with contextlib.suppress(ModelNotFoundError):  # removed meanwhile
                await self.store.update(record.name, **changed)

    # -- requests -------------------------------------------------------------------------------

    def idle(self) -> frozenset[str]:
        """The models unloaded for idleness that the next request loads again (still served)."""
        return frozenset(self._idle)

    async def ensure(self, name: str) -> bool:
        """Note a request for ``name``; load it first if it was unloaded for idleness. True if it was."""
        if name not in self._known:
            return False
        self._used[name] = time.monotonic()
        if name not in self._idle:
            return False
        record = await self.store.find(name)
        if record is None or record.desired_state != "running":
            return False
        task = self._loads.get(name) or self._start_load(record)
        log.info("model %s was unloaded for idleness: loading it for a request", name)
        loaded = await asyncio.shield(task)
        self._used[name] = time.monotonic()
        return loaded


def _params_changed(record: ModelRecord, info: ModelState) -> bool:
    """Whether the runtime holds the model loaded with other parameters than its row's."""
    return info.state == READY and info.params != dict(record.params)


def _actual(info: ModelState) -> str:
    return {READY: "running", LOADING: "loading", FAILED: "failed"}.get(info.state, "stopped")
