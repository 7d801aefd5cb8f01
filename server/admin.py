"""Operator actions on a running gateway: load first, then move the alias, then serve it at once.

Registry writes run on a worker thread: one waiting out another process's lock (up to the busy
timeout) must not stall chat on the event loop.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from adapters.names import check_alias, check_name
from adapters.registry import ANYWHERE, Expected, Registry
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE
from adapters.version import AdapterVersion, AliasEvent
from server.resolver import AdapterResolver


class AdminService:
    """Promote, roll back, move aliases and register uploads; a version that fails to load never moves an alias."""

    def __init__(self, registry: Registry, resolver: AdapterResolver):
        self.registry = registry
        self.resolver = resolver

    async def _move(self, adapter: str, version: int, move: Callable[[], AliasEvent]) -> AliasEvent:
        target = await asyncio.to_thread(self.registry.get_version, adapter, version)
        await self.resolver.ensure_loaded(target)  # AdapterLoadFailed or AdapterBroken: the alias stays put
        event = await asyncio.to_thread(move)  # AliasMoved when an alias is no longer where the caller saw it
        await self.resolver.refresh()
        return event

    async def promote(self, adapter: str, version: int | None, actor: str, reason: str,
                      expected: Expected = ANYWHERE, expected_candidate: Expected = ANYWHERE) -> AliasEvent:
        """Move production to `version` (default: the candidate); `expected_candidate` as Registry.promote's."""
        if version is None:
            version = await asyncio.to_thread(self.registry.promote_target, adapter)
        return await self._move(adapter, version, partial(
            self.registry.promote, adapter, version, actor=actor, reason=reason or "promote", expected=expected,
            expected_candidate=expected_candidate))

    async def rollback(self, adapter: str, to: int | None, alias: str, actor: str, reason: str,
                       expected: Expected = ANYWHERE) -> AliasEvent:
        if to is None:
            to = await asyncio.to_thread(self.registry.rollback_target, adapter, alias)
        return await self.set_alias(adapter, alias, to, actor, reason or f"rollback to v{to}", expected)

    async def set_alias(self, adapter: str, alias: str, version: int, actor: str, reason: str,
                        expected: Expected = ANYWHERE) -> AliasEvent:
        return await self._move(adapter, version, partial(
            self.registry.set_alias, adapter, check_alias(alias), version, actor=actor, reason=reason or f"set {alias}",
            expected=expected))

    async def register_upload(
        self, adapter: str, config: bytes, weights: bytes, alias: str | None, actor: str
    ) -> AdapterVersion:
        """Register an adapter uploaded as its two files (requests never carry paths)."""
        check_name(adapter)
        with tempfile.TemporaryDirectory(prefix="flywheel-upload-") as tmp:
            folder = Path(tmp)
            (folder / CONFIG_FILE).write_bytes(config)
            (folder / WEIGHTS_FILE).write_bytes(weights)
            version = await asyncio.to_thread(self.registry.register, adapter, folder, actor=actor)
        if alias:
            await self.set_alias(adapter, alias, version.version, actor, f"registered v{version.version}")
        return version

    async def verify(self, adapter: str, version: int, actor: str) -> AdapterVersion:
        """Hash a version's files again: broken ones are marked broken, restored ones ready again."""
        target = await asyncio.to_thread(self.registry.get_version, adapter, version)
        problems = await asyncio.to_thread(self.resolver.check_files, target)  # fetched first from a store
        if problems:
            await asyncio.to_thread(self.registry.mark_broken, adapter, version, "; ".join(problems), actor=actor)
        else:
            await asyncio.to_thread(self.registry.mark_ready, adapter, version, actor=actor)
        await self.resolver.refresh()
        return await asyncio.to_thread(self.registry.get_version, adapter, version)
