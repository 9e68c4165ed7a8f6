"""The lifecycle of one process: the registry, and in the proxy the reconciler that acts on it.

:class:`Lifecycle` is built without I/O (the proxy's app factory does nothing at import or build
time) and started once the database and the runtime client are open. The admin console receives
the same object and reaches the registry through it, so an admin action in the console pokes this
process's reconciler at once.

The serving process also calls :meth:`Lifecycle.serve` (issue 25): the vault learns that this process
holds the key the tokens use (a rotation's copies under the old key are dropped), and pulls whose
process is gone are marked ``interrupted``, at once and every ``PULL_CHECK_EVERY`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from proxy.lifecycle.download import Downloader
from proxy.lifecycle.errors import LifecycleError
from proxy.lifecycle.reconciler import Reconciler, RuntimeControl
from proxy.lifecycle.registry import Registry
from proxy.lifecycle.trial import Generator, TrialResult, Trials
from proxy.storage.database import Database
from proxy.storage.errors import StorageError
from proxy.storage.hf_tokens import TokenStore
from proxy.storage.models import ModelStore
from proxy.storage.vault import Vault

log = logging.getLogger(__name__)

PULL_CHECK_EVERY = 10.0  # seconds between looks for pulls whose process is gone


class Lifecycle:
    def __init__(
        self,
        config_dir: Path,
        hf_cache: Path | None,
        vault: Vault | None,
        *,
        endpoint: str | None = None,
        interval: float = 2.0,
    ) -> None:
        self.config_dir, self.hf_cache, self.vault = config_dir, hf_cache, vault
        self.endpoint, self.interval = endpoint, interval
        self._registry: Registry | None = None
        self._store: ModelStore | None = None
        self.reconciler: Reconciler | None = None
        self._task: asyncio.Task[None] | None = None
        self._pull_watch: asyncio.Task[None] | None = None
        self.trials = Trials()

    async def start(self, db: Database, runtime: RuntimeControl | None) -> None:
        """Open the registry; with a runtime, also run the reconciler (its first pass at once)."""
        store = self._store = ModelStore(db, self.config_dir)
        if runtime is not None:
            self.reconciler = Reconciler(store, runtime, self.interval)
            self._task = asyncio.ensure_future(self.reconciler.run_forever())
        kick = self.reconciler.kick if self.reconciler else None
        downloader = Downloader(self.hf_cache, self.endpoint)
        self._registry = Registry(store, TokenStore(db, self.vault), downloader, on_change=kick)

    async def serve(self) -> None:
        """What the serving process does once started: settle the vault's key, watch for dead pulls."""
        problem = await self.registry.tokens.settle_key()
        if problem:
            log.warning("%s", problem)
        await self.registry.settle_pulls()
        self._pull_watch = asyncio.ensure_future(self._watch_pulls())

    async def _watch_pulls(self) -> None:
        while True:
            await asyncio.sleep(PULL_CHECK_EVERY)
            try:
                await self.registry.settle_pulls()
            except StorageError as exc:
                log.warning("checking for interrupted downloads failed: %s", exc)

    async def close(self) -> None:
        for task in (self._task, self._pull_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.reconciler is not None:
            await self.reconciler.close()

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise LifecycleError("the model lifecycle is not started")
        return self._registry

    async def test(self, runtime: Generator, name: str) -> TrialResult:
        """One short, timed generation of ``name`` (the console's "Test" button; see ``trial``)."""
        record = await self.registry.store.get(name)
        return await self.trials.run(runtime, record, self.ensure)

    def idle_models(self) -> frozenset[str]:
        """For the model list: models unloaded for idleness, served on demand (none without a reconciler)."""
        return frozenset() if self.reconciler is None else self.reconciler.idle()

    async def ensure(self, name: str) -> bool:
        """For admission: note a request, load an idle model first (True when it had to)."""
        return False if self.reconciler is None else await self.reconciler.ensure(name)

    async def starting(self, name: str) -> str | None:
        """For a model the runtime does not serve now: what it is doing when it is registered and
        wanted running ("loading", "downloading"...), so it is coming; None when it is not wanted.

        Read from the database, the desired state's source: right after a restart, before the
        reconciler's first pass, and whichever process asked for the model to run.
        """
        record = None if self._store is None else await self._store.find(name)
        if record is None or record.kind != "llm" or record.desired_state != "running":
            return None
        if record.download_state == "downloading":
            return "downloading"
        if record.actual_state == "failed":
            return "being loaded again after a failed load"
        return "loading"
