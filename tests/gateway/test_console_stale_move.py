"""The console's stale-page check happens in the registry's write: a move made through another replica after
the page's action began is refused (409 in OpenAI's error format on the wire), and nothing changes."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import Conflict
from adapters.registry import Registry
from server.console.actions import ConsoleActions
from server.errors import to_response
from tests.lora_factory import write_lora


def test_a_move_through_another_replica_after_the_page_loaded_is_refused(client, settings, base_dir: Path,
                                                                          tmp_path: Path) -> None:
    state = client.app.state.flywheel
    for seed in (1, 2, 3):
        state.registry.register("bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed))
    state.registry.promote("bot", 1)
    other = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), max_rank=8)
    write, pending = state.registry.db.write, [lambda: other.promote("bot", 2, actor="cli")]

    @contextmanager
    def after_the_other_replica():  # it moves production once this move has looked, before its write begins
        while pending:
            pending.pop()()
        with write() as conn:
            yield conn

    state.registry.db.write = after_the_other_replica
    actions = ConsoleActions(state)
    with pytest.raises(Conflict, match="production moved to v2 since the page showed v1; nothing was changed") as e:
        client.portal.call(actions.promote, "bot", 3, "stale page", 1)
    assert state.registry.alias_version("bot", "production") == 2
    response = to_response(e.value)
    assert response.status_code == 409
    assert b'"type":"invalid_request_error"' in response.body and b'"code":"conflict"' in response.body
    assert client.portal.call(actions.promote, "bot", 3, "fresh page", 2) == "bot: production moved v2 -> v3"
