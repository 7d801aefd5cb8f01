"""The console's actions, through the same code as the admin API: `AdminService` and the training route.

Each action first checks that the alias still points where the page showed it: a move made by someone
else since the page loaded is refused with a message instead of being overwritten blindly.
"""

from __future__ import annotations

from adapters.errors import Conflict
from adapters.names import PRODUCTION, check_alias, check_name
from server.admin import AdminService
from server.errors import BadRequest, EngineUnavailable
from server.routes.training import RunRequest, request_run
from server.state import GatewayState

ACTOR = "console"


def _version_text(v: int | None) -> str:
    return f"v{v}" if v is not None else "nothing"


class ConsoleActions:
    """Promote, roll back, move an alias, queue a run; each returns the message the page shows."""

    def __init__(self, state: GatewayState):
        self.state = state

    def _admin(self) -> AdminService:
        if not self.state.ready or self.state.resolver is None:
            raise EngineUnavailable(self.state.startup_error or "the engine is still warming up; try again shortly")
        return AdminService(self.state.registry, self.state.resolver)

    def _check_unmoved(self, adapter: str, alias: str, expected: int | None) -> None:
        now = self.state.registry.alias_version(check_name(adapter), check_alias(alias))
        if now != expected:
            raise Conflict(f"{adapter}: {alias} moved to {_version_text(now)} since the page showed "
                           f"{_version_text(expected)}; nothing was changed. Reload and decide again.")

    async def promote(self, adapter: str, version: int | None, reason: str, expected: int | None) -> str:
        self._check_unmoved(adapter, PRODUCTION, expected)
        event = await self._admin().promote(adapter, version, ACTOR, reason)
        return f"{adapter}: production moved {_version_text(event.from_version)} -> v{event.to_version}"

    async def rollback(self, adapter: str, alias: str, to: int | None, reason: str, expected: int | None) -> str:
        self._check_unmoved(adapter, alias, expected)
        event = await self._admin().rollback(adapter, to, alias, ACTOR, reason)
        return f"{adapter}: {alias} rolled back {_version_text(event.from_version)} -> v{event.to_version}"

    async def set_alias(self, adapter: str, alias: str, version: int | None, reason: str,
                        expected: int | None) -> str:
        if version is None:
            raise BadRequest("name the version the alias should point to", "version")
        self._check_unmoved(adapter, alias, expected)
        event = await self._admin().set_alias(adapter, alias, version, ACTOR, reason)
        return f"{adapter}: {alias} moved {_version_text(event.from_version)} -> v{event.to_version}"

    async def queue_run(self, adapter: str) -> str:
        run = await request_run(RunRequest(adapter=adapter), self.state)
        return f"{adapter}: training run {run['id']} is {run['status']}; the trainer watcher starts it"
