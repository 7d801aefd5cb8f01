"""The console's stale-page check happens in the registry's write: a move made through another replica after
the page's action began is refused (409 in OpenAI's error format on the wire), and nothing changes. A promote
with no version named promotes the candidate the page showed, never whatever the candidate is by then, and the
registry checks that in the same write."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import Conflict
from adapters.registry import Registry
from server.console.actions import ConsoleActions
from server.errors import BadRequest, to_response
from tests.lora_factory import write_lora


def _three_versions(state, tmp_path: Path, base_dir: Path) -> None:
    for seed in (1, 2, 3):
        state.registry.register("bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed))
    state.registry.promote("bot", 1)


def _other_replica_moves_first(state, settings, base_dir: Path, move) -> None:
    """Make `move(other registry)` run once this process's next move has looked, before its write begins."""
    other = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), max_rank=8)
    write, pending = state.registry.db.write, [lambda: move(other)]

    @contextmanager
    def after_the_other_replica():
        while pending:
            pending.pop()()
        with write() as conn:
            yield conn

    state.registry.db.write = after_the_other_replica


def test_a_move_through_another_replica_after_the_page_loaded_is_refused(client, settings, base_dir: Path,
                                                                          tmp_path: Path) -> None:
    state = client.app.state.flywheel
    _three_versions(state, tmp_path, base_dir)
    _other_replica_moves_first(state, settings, base_dir, lambda other: other.promote("bot", 2, actor="cli"))
    actions = ConsoleActions(state)
    with pytest.raises(Conflict, match="production moved to v2 since the page showed v1; nothing was changed") as e:
        client.portal.call(actions.promote, "bot", 3, "stale page", 1)
    assert state.registry.alias_version("bot", "production") == 2
    response = to_response(e.value)
    assert response.status_code == 409
    assert b'"type":"invalid_request_error"' in response.body and b'"code":"conflict"' in response.body
    assert client.portal.call(actions.promote, "bot", 3, "fresh page", 2) == "bot: production moved v2 -> v3"


def test_a_rollback_after_another_replica_moved_the_alias_is_refused(client, settings, base_dir: Path,
                                                                      tmp_path: Path) -> None:
    state = client.app.state.flywheel
    _three_versions(state, tmp_path, base_dir)
    state.registry.promote("bot", 2)  # the page shows production at v2, to roll back to v1
    _other_replica_moves_first(state, settings, base_dir, lambda other: other.promote("bot", 3, actor="cli"))
    actions = ConsoleActions(state)
    with pytest.raises(Conflict, match="production moved to v3 since the page showed v2; nothing was changed"):
        client.portal.call(actions.rollback, "bot", "production", None, "stale page", 2)
    assert state.registry.alias_version("bot", "production") == 3
    assert [e.to_version for e in state.registry.history("bot", "production")] == [1, 2, 3]


def test_moving_an_alias_someone_else_moved_is_refused(client, settings, base_dir: Path, tmp_path: Path) -> None:
    state = client.app.state.flywheel
    _three_versions(state, tmp_path, base_dir)
    _other_replica_moves_first(state, settings, base_dir,
                               lambda other: other.set_alias("bot", "staff", 2, actor="cli"))
    actions = ConsoleActions(state)
    with pytest.raises(Conflict, match="staff moved to v2 since the page showed nothing; nothing was changed"):
        client.portal.call(actions.set_alias, "bot", "staff", 3, "stale page", None)  # the page showed no staff
    assert state.registry.alias_version("bot", "staff") == 2


def test_a_bare_promote_promotes_the_candidate_the_page_showed_or_nothing(client, base_dir: Path,
                                                                          tmp_path: Path) -> None:
    state = client.app.state.flywheel
    _three_versions(state, tmp_path, base_dir)
    state.registry.set_alias("bot", "candidate", 2)
    actions = ConsoleActions(state)
    state.registry.set_alias("bot", "candidate", 3, reason="a newer run")  # after the page showed v2
    with pytest.raises(Conflict, match="candidate moved to v3 since the page showed v2; nothing was changed"):
        client.portal.call(actions.promote, "bot", None, "the candidate shown", 1, 2)
    assert state.registry.alias_version("bot", "production") == 1
    with pytest.raises(BadRequest, match="showed no candidate"):
        client.portal.call(actions.promote, "bot", None, "no candidate shown", 1, None)
    assert state.registry.alias_version("bot", "production") == 1
    assert client.portal.call(actions.promote, "bot", None, "fresh page", 1, 3) == "bot: production moved v1 -> v3"


def test_a_bare_promote_after_another_replica_moved_the_candidate_is_refused(client, settings, base_dir: Path,
                                                                              tmp_path: Path) -> None:
    state = client.app.state.flywheel
    _three_versions(state, tmp_path, base_dir)
    state.registry.set_alias("bot", "candidate", 2)  # the page shows the candidate at v2
    _other_replica_moves_first(state, settings, base_dir,
                               lambda other: other.set_alias("bot", "candidate", 3, actor="trainer"))
    actions = ConsoleActions(state)
    with pytest.raises(Conflict, match="candidate moved to v3 since the page showed v2; nothing was changed") as e:
        client.portal.call(actions.promote, "bot", None, "the candidate shown", 1, 2)
    assert to_response(e.value).status_code == 409
    assert state.registry.alias_version("bot", "production") == 1
    assert [e.to_version for e in state.registry.history("bot", "production")] == [1]
