"""Which adapter version serves a request, and hot-swapping when an alias moves.

The resolver keeps an in-memory snapshot of every alias, refreshed by a poller that watches the
registry (so moves made by the CLI or the trainer, in other processes, arrive within a poll period).
A new version is loaded into vLLM *before* the snapshot switches to it; if loading fails, the alias
is moved back in the registry with the reason, so the alias never points at an unservable version.
A request resolves its version once, at its start, and keeps it to the end.

When another process holds the registry's lock, requests keep resolving from the snapshot: a round
that hits `RegistryBusy` logs a warning and is redone whole at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from adapters.errors import AdapterNotFound, RegistryBusy
from adapters.names import CANARY, PRODUCTION, AdapterRef
from adapters.registry import Registry
from adapters.version import AdapterVersion
from server.engine import AdapterHandle, Engine
from server.errors import AdapterLoadFailed
from server.metrics import Metrics

logger = logging.getLogger(__name__)


def handle_for(version: AdapterVersion) -> AdapterHandle:
    return AdapterHandle(name=version.lora_name, id=version.id, path=str(version.path))


class AdapterResolver:
    """Resolve `name`, `name@7`, `name@alias` to a loaded version; follow registry moves."""

    def __init__(
        self, registry: Registry, engine: Engine, metrics: Metrics, poll_seconds: float = 0.5, canary_share: float = 0.1
    ):
        self.registry = registry
        self.canary_share = canary_share
        self.engine = engine
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._aliases: dict[tuple[str, str], AdapterVersion] = {}
        self._loaded: set[int] = set()
        self._pinned: dict[tuple[str, int], AdapterVersion] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._token: tuple[int, int] | None = None
        self._task: asyncio.Task | None = None
        # One refresh at a time: a refresh paused while loading one version must not install a stale
        # snapshot of another alias over a newer one that an admin call installed meanwhile.
        self._refreshing = asyncio.Lock()

    # ---- serving path -------------------------------------------------------------------------
    async def resolve(self, text: str) -> AdapterVersion:
        """The version a new request should use; loads pinned versions on first use."""
        ref = AdapterRef.parse(text)
        if "@" not in text and random.random() < self.canary_share:
            canary = self._aliases.get((ref.name, CANARY))
            if canary is not None:  # a share of the bare name's traffic tries the canary
                return canary
        if ref.alias is not None:
            version = self._aliases.get((ref.name, ref.alias))
            if version is None:
                version = self.registry.resolve(ref)  # raises AdapterNotFound with the right message
                await self.ensure_loaded(version)
            return version
        version = self._pinned.get((ref.name, ref.version))
        if version is None:  # versions are immutable: one registry read per pinned version, not per request
            version = self._pinned[(ref.name, ref.version)] = self.registry.get_version(ref.name, ref.version)
        if version.status != "ready":
            raise AdapterNotFound(f"{version.lora_name} was rejected by the evaluation gate and is not served")
        await self.ensure_loaded(version)
        return version

    def production_versions(self) -> dict[str, AdapterVersion]:
        return {name: v for (name, alias), v in self._aliases.items() if alias == PRODUCTION}

    async def ensure_loaded(self, version: AdapterVersion) -> None:
        """Load `version` into vLLM once; concurrent callers wait on one per-version lock."""
        if version.id in self._loaded:
            return
        lock = self._locks.setdefault(version.id, asyncio.Lock())
        async with lock:
            if version.id in self._loaded:
                return
            start = time.perf_counter()
            try:
                await self.engine.load_adapter(handle_for(version))
            except AdapterLoadFailed:
                self.metrics.adapter_loads.labels(version.adapter, str(version.version), "error").inc()
                raise
            elapsed = time.perf_counter() - start
            self.metrics.adapter_loads.labels(version.adapter, str(version.version), "ok").inc()
            self.metrics.adapter_load_seconds.observe(elapsed)
            self._loaded.add(version.id)
            logger.info("loaded adapter %s into the engine in %.2fs", version.lora_name, elapsed)

    # ---- following the registry ---------------------------------------------------------------
    async def refresh(self, force: bool = False) -> None:
        """Bring the alias snapshot in line with the registry, loading new versions first."""
        async with self._refreshing:
            await self._refresh(force)

    async def _refresh(self, force: bool) -> None:
        token = self.registry.change_token()
        if token == self._token and not force:
            return
        current = self.registry.aliases()
        for key in [k for k in self._aliases if k not in current]:
            logger.info("alias %s@%s removed", *key)
            del self._aliases[key]
        settled = True
        for (name, alias), number in current.items():
            old = self._aliases.get((name, alias))
            if old is not None and old.version == number:
                continue
            settled &= await self._switch(name, alias, old, self.registry.get_version(name, number))
        if settled:  # only a round that applied everything is skipped next time (one cut short is redone)
            self._token = token

    async def _switch(self, name: str, alias: str, old: AdapterVersion | None, new: AdapterVersion) -> bool:
        """Serve `new` for the alias, or move the alias back if it cannot load; False if the registry moved."""
        start = time.perf_counter()
        try:
            await self.ensure_loaded(new)
        except AdapterLoadFailed as e:
            logger.warning("%s@%s -> v%d failed to load, moving the alias back: %s", name, alias, new.version, e)
            # On a thread: if another process holds the registry's lock, only this round waits, not serving.
            if old is not None:
                await asyncio.to_thread(
                    self.registry.set_alias, name, alias, old.version, actor="gateway", reason=f"load failed: {e}"
                )
            else:
                await asyncio.to_thread(
                    self.registry.remove_alias, name, alias, actor="gateway", reason=f"load failed: {e}"
                )
            return False  # our own move changed the registry; re-read it next round
        self._aliases[(name, alias)] = new
        self.metrics.adapter_swaps.labels(name, alias).inc()
        self.metrics.swap_seconds.observe(time.perf_counter() - start)
        if old is not None:
            logger.info("%s@%s now serves v%d (was v%d)", name, alias, new.version, old.version)
        return True

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except RegistryBusy as e:
                logger.warning("registry poll: %s; serving the last known aliases meanwhile", e)
            except Exception:  # keep following the registry whatever one round hit
                logger.exception("registry refresh failed; retrying")
            await asyncio.sleep(self.poll_seconds)

    async def start(self) -> None:
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._poll(), name="registry-poller")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            self._task = None
