"""Which adapter version serves a request, and hot-swapping when an alias moves.

The resolver keeps an in-memory snapshot of every alias, refreshed by a poller that watches the
registry (so moves made by the CLI or the trainer, in other processes, arrive within a poll period).
A new version is loaded into vLLM *before* the snapshot switches to it; if loading fails, the alias
is moved back in the registry with the reason, so the alias never points at an unservable version.
A request resolves its version once, at its start, and keeps it to the end.

When another process holds the registry's lock, requests keep resolving from the snapshot: a round
that hits `RegistryBusy` logs a warning and is redone whole at the next poll.

A version whose files no longer match what was registered (adapters/integrity.py) is broken: it is
marked so in the registry (every gateway sees it through the change token) and requests for it get
503 `adapter_broken`, whichever alias points at it; other adapters keep serving. Its files are hashed
when it is loaded into vLLM; every later request only `stat`s them. An alias that already serves a
version that breaks stays on it (moving traffic to an older version is the operator's call: roll
back, or restore the files and verify); an alias moved to a version found broken as it loads moves
back, as for any load failure (docs/architecture.md, invariant 3).

With an object store (adapters/object_store.py) the files are fetched to this host first, by
`AdapterFiles.local_folder`, wherever they are checked. A fetch that fails is `AdapterUnavailable`: 503 on this
replica only, nothing written to the registry, retried at the next request or poll (an alias that cannot be
fetched keeps its old version here meanwhile). Only stored files that are there and differ from the manifest
(`FilesMismatch`) mark the version broken.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time

from adapters.errors import AdapterNotFound, AdapterUnavailable, AliasMoved, FilesMismatch, RegistryBusy
from adapters.integrity import IntegrityCache
from adapters.names import CANARY, PRODUCTION, AdapterRef
from adapters.registry import Registry
from adapters.version import AdapterVersion, VersionStatus
from server.engine import AdapterHandle, Engine
from server.errors import AdapterBroken, AdapterLoadFailed
from server.metrics import Metrics

logger = logging.getLogger(__name__)


def handle_for(version: AdapterVersion) -> AdapterHandle:
    return AdapterHandle(name=version.lora_name, id=version.id, path=str(version.path))


def broken_error(version: AdapterVersion, reason: str) -> AdapterBroken:
    """What a client sees for a broken version: which one, what is wrong, what to do."""
    name, number = version.adapter, version.version
    error = AdapterBroken(
        f"adapter version {version.lora_name} is broken and not served: {reason}. An operator can roll back to a"
        f" healthy version (`flywheel adapters rollback {name}` or POST /admin/adapters/{name}/rollback), or restore"
        f" its files and POST /admin/adapters/{name}/versions/{number}/verify, or register the adapter again",
        "adapter",
    )
    error.reason = reason
    return error


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
        self._token: tuple[int, ...] | None = None
        self.integrity = IntegrityCache()
        self._task: asyncio.Task | None = None
        # One refresh at a time: a refresh paused while loading one version must not install a stale
        # snapshot of another alias over a newer one that an admin call installed meanwhile.
        self._refreshing = asyncio.Lock()

    # ---- serving path -------------------------------------------------------------------------
    async def resolve(self, text: str) -> AdapterVersion:
        """The version a new request should use; loads pinned versions on first use."""
        ref = AdapterRef.parse(text)
        version = None
        if "@" not in text and random.random() < self.canary_share:
            version = self._aliases.get((ref.name, CANARY))  # a share of the bare name's traffic tries the canary
        if version is None and ref.alias is not None:
            version = self._aliases.get((ref.name, ref.alias))
            if version is None:  # raises AdapterNotFound with the right message; off the loop, like every read
                version = await asyncio.to_thread(self.registry.resolve, ref)
        if version is None:
            version = self._pinned.get((ref.name, ref.version))
            if version is None:  # one registry read per pinned version (until the registry changes), not per request
                version = await asyncio.to_thread(self.registry.get_version, ref.name, ref.version)
                self._pinned[(ref.name, ref.version)] = version
            if version.status == VersionStatus.REJECTED:
                raise AdapterNotFound(f"{version.lora_name} was rejected by the evaluation gate and is not served")
        await self.ensure_loaded(version)
        return version

    def production_versions(self) -> dict[str, AdapterVersion]:
        return {name: v for (name, alias), v in self._aliases.items() if alias == PRODUCTION}

    async def ensure_loaded(self, version: AdapterVersion) -> None:
        """Load `version` into vLLM once (its files checked first); raises AdapterBroken for broken files.

        Concurrent callers wait on one per-version lock. A loaded version costs a few `stat` calls.
        """
        if version.status == VersionStatus.BROKEN:
            raise broken_error(version, version.status_reason or "its files do not match the registered ones")
        lock = self._locks.setdefault(version.id, asyncio.Lock())
        if version.id in self._loaded:
            problems = self.integrity.cached(version)  # unchanged files: no hashing on the hot path
            if problems is None:
                async with lock:  # files changed: one hash for a burst of requests, not one each
                    problems = self.integrity.cached(version)
                    if problems is None:
                        problems = await asyncio.to_thread(self.check_files, version)
            if problems:
                await self._broken(version, problems)
            return
        async with lock:
            if version.id in self._loaded:
                return
            if problems := await asyncio.to_thread(self.check_files, version):  # vLLM reads the files now
                await self._broken(version, problems)
            start = time.perf_counter()
            try:
                await self.engine.load_adapter(handle_for(version))
            except AdapterLoadFailed as e:
                self.metrics.adapter_loads.labels(version.adapter, str(version.version), "error").inc()
                if problems := await asyncio.to_thread(self.check_files, version):  # changed under vLLM?
                    await self._broken(version, problems, cause=e)
                raise
            elapsed = time.perf_counter() - start
            self.metrics.adapter_loads.labels(version.adapter, str(version.version), "ok").inc()
            self.metrics.adapter_load_seconds.observe(elapsed)
            self._loaded.add(version.id)
            logger.info("loaded adapter %s into the engine in %.2fs", version.lora_name, elapsed)

    def check_files(self, version: AdapterVersion) -> list[str]:
        """Get the version's files onto this host (fetched if absent) and hash them: every problem, or none.

        Blocking (run it on a thread). AdapterUnavailable propagates: a failed fetch says nothing of the version.
        """
        files = self.registry.files
        try:
            files.local_folder(version)
            if not (problems := self.integrity.check(version)) or not files.forget(version):
                return problems
            # A cached copy changed or left under this check (another process on this host evicted it): that
            # says nothing of the version, so fetch it again, which checks it against the manifest once more.
            files.local_folder(version)
        except FilesMismatch as e:
            return e.problems
        if problems := self.integrity.check(version):  # churn on this host's disk again: not the version's fault
            raise AdapterUnavailable(f"adapter version {version.lora_name}'s cached files changed while being "
                                     f"checked ({'; '.join(problems)}); retry shortly")
        return []

    async def _broken(self, version: AdapterVersion, problems: list[str], cause: Exception | None = None) -> None:
        """Record `version` as broken in the registry (off the event loop) and raise AdapterBroken."""
        reason = "; ".join(problems)
        try:
            await asyncio.to_thread(self.registry.mark_broken, version.adapter, version.version, reason)
        except RegistryBusy as e:  # the request still gets its answer; the next request tries the mark again
            logger.warning("could not mark %s broken (%s): %s", version.lora_name, reason, e)
        raise broken_error(version, reason) from cause

    # ---- following the registry ---------------------------------------------------------------
    async def refresh(self, force: bool = False) -> None:
        """Bring the alias snapshot in line with the registry, loading new versions first."""
        async with self._refreshing:
            await self._refresh(force)

    async def _refresh(self, force: bool) -> None:
        # Registry reads run on a thread: on PostgreSQL each is a network round trip, and a slow or unreachable
        # database must stall this poll, not every request and stream on the event loop.
        token = await asyncio.to_thread(self.registry.change_token)
        if token == self._token and not force:
            return
        self._pinned.clear()  # a version's status can change (broken, verified): re-read pins once
        current = await asyncio.to_thread(self.registry.aliased_versions)  # one query, however many adapters
        for key in [k for k in self._aliases if k not in current]:
            logger.info("alias %s@%s removed", *key)
            del self._aliases[key]
        settled = True
        for (name, alias), new in current.items():
            old = self._aliases.get((name, alias))
            if old is not None and old.version == new.version:
                self._aliases[(name, alias)] = new  # same version; its status may have changed
                continue
            settled &= await self._switch(name, alias, old, new)
        if settled:  # only a round that applied everything is skipped next time (one cut short is redone)
            self._token = token

    async def _switch(self, name: str, alias: str, old: AdapterVersion | None, new: AdapterVersion) -> bool:
        """Serve `new` for the alias, or move the alias back if it cannot load; False if the registry moved."""
        start = time.perf_counter()
        try:
            await self.ensure_loaded(new)
        except AdapterBroken as e:
            if old is None or old.status != VersionStatus.READY:  # nothing healthy to go back to: 503 adapter_broken
                logger.warning("%s@%s points at broken v%d: %s", name, alias, new.version, e)
                broken = dataclasses.replace(new, status=VersionStatus.BROKEN, status_reason=e.reason)
                self._aliases[(name, alias)] = broken
                return True
            return await self._move_back(name, alias, old, new, e)
        except AdapterLoadFailed as e:
            return await self._move_back(name, alias, old, new, e)
        except AdapterUnavailable as e:  # this replica's problem, not the version's: keep what it serves, retry
            logger.warning("%s@%s -> v%d not switched here yet: %s", name, alias, new.version, e)
            return False
        self._aliases[(name, alias)] = new
        self.metrics.adapter_swaps.labels(name, alias).inc()
        self.metrics.swap_seconds.observe(time.perf_counter() - start)
        if old is not None:
            logger.info("%s@%s now serves v%d (was v%d)", name, alias, new.version, old.version)
        return True

    async def _move_back(
        self, name: str, alias: str, old: AdapterVersion | None, new: AdapterVersion, e: Exception
    ) -> bool:
        """Undo an alias move to a version that cannot serve; False: the registry moved, re-read it.

        The move back names the version it undoes (`expected`): if an operator or another replica moved the
        alias again meanwhile, their move stands and the next round follows it.
        """
        logger.warning("%s@%s -> v%d failed to load, moving the alias back: %s", name, alias, new.version, e)
        reason = f"load failed: {e}"
        try:  # on a thread: if another process holds the registry's lock, only this round waits, not serving
            if old is not None:
                await asyncio.to_thread(self.registry.set_alias, name, alias, old.version, actor="gateway",
                                        reason=reason, expected=new.version)
            else:
                await asyncio.to_thread(self.registry.remove_alias, name, alias, actor="gateway", reason=reason,
                                        expected=new.version)
        except AliasMoved as moved:
            logger.info("%s@%s was not moved back: %s", name, alias, moved)
        return False  # the registry changed (our move or theirs); re-read it next round

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
