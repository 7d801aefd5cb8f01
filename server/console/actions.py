"""The console's actions, through the same code as the admin API: `AdminService` and `queue_run`.

Each move names where the page showed the alias (`expected`), and the registry checks it inside the move's
write transaction: a move made by someone else since the page loaded, through any replica, is refused with
a message instead of being overwritten blindly. A promote with no version named promotes the candidate the
page showed (its `seen` field), refused as well, in the same transaction, when the candidate has moved since.

A promote's and a rollback's reason is recorded after the action's name ("promote: ..."), as the admin API's
default reasons are: the registry keeps no kind of move, and the plot's markers read it from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from adapters.errors import AliasMoved, Conflict, version_text
from adapters.names import PRODUCTION, check_alias, check_name
from adapters.registry import ANYWHERE, Expected
from adapters.version import AliasEvent
from server.admin import AdminService
from server.console.session import ACTOR
from server.errors import BadRequest, EngineUnavailable
from server.state import GatewayState
from server.training_requests import queue_run


async def _unless_moved(move: Awaitable[AliasEvent]) -> AliasEvent:
    """The move's event; the registry's AliasMoved in the page's words (still a Conflict, 409)."""
    try:
        return await move
    except AliasMoved as e:
        raise Conflict(f"{e.adapter}: {e.alias} moved to {version_text(e.current)} since the page showed "
                       f"{version_text(e.expected)}; nothing was changed. Reload and decide again.") from e


class ConsoleActions:
    """Promote, roll back, move an alias, queue a run; each returns the message the page shows."""

    def __init__(self, state: GatewayState, actor: str = ACTOR):
        """`actor`: who the audit log names for these moves (`session.actor`: console:<operator>)."""
        self.state = state
        self.actor = actor

    def _admin(self) -> AdminService:
        if not self.state.ready or self.state.resolver is None:
            raise EngineUnavailable(self.state.startup_error or "the engine is still warming up; try again shortly")
        return AdminService(self.state.registry, self.state.resolver)

    async def promote(self, adapter: str, version: int | None, reason: str, expected: int | None,
                      shown_candidate: int | None = None) -> str:
        """Promote `version`, or with none named the candidate the page showed (`shown_candidate`), never
        whatever the candidate is by now: the registry refuses a candidate moved since the page loaded, in the
        move's write transaction, as it refuses a moved production."""
        admin, adapter = self._admin(), check_name(adapter)
        candidate: Expected = ANYWHERE
        if version is None:
            if shown_candidate is None:
                raise BadRequest(f"{adapter}: the page showed no candidate to promote; name a version", "version")
            version = candidate = shown_candidate
        event = await _unless_moved(admin.promote(adapter, version, self.actor, f"promote: {reason}", expected,
                                                  expected_candidate=candidate))
        return f"{adapter}: {PRODUCTION} moved {version_text(event.from_version)} -> v{event.to_version}"

    async def rollback(self, adapter: str, alias: str, to: int | None, reason: str, expected: int | None) -> str:
        admin, alias = self._admin(), check_alias(alias)
        event = await _unless_moved(admin.rollback(check_name(adapter), to, alias, self.actor, f"rollback: {reason}",
                                                   expected))
        return f"{adapter}: {alias} rolled back {version_text(event.from_version)} -> v{event.to_version}"

    async def set_alias(self, adapter: str, alias: str, version: int | None, reason: str,
                        expected: int | None) -> str:
        if version is None:
            raise BadRequest("name the version the alias should point to", "version")
        admin = self._admin()
        event = await _unless_moved(admin.set_alias(check_name(adapter), check_alias(alias), version, self.actor,
                                                    reason, expected))
        return f"{adapter}: {alias} moved {version_text(event.from_version)} -> v{event.to_version}"

    async def queue_run(self, adapter: str, reason: str) -> str:
        """Queue a run as the admin API's POST does, keeping who asked and why with it (the run's page shows it)."""
        run = await asyncio.to_thread(queue_run, self.state, adapter, self.actor, reason)
        return f"{run.adapter}: training run {run.id} is {run.status}; the trainer watcher starts it"
