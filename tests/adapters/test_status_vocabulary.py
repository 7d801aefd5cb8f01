"""One vocabulary of alias names and version and run statuses: what the code writes reads back as the same
plain words on SQLite and on PostgreSQL, and nothing outside it is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import InvalidAdapter
from adapters.names import CANARY, CANDIDATE, PRODUCTION, AdapterRef, Alias
from adapters.registry import Registry
from adapters.runs import FINISHED, RunStatus, RunStore
from adapters.version import VersionStatus
from tests.lora_factory import write_lora, write_tiny_base


def test_the_words_are_the_documented_ones() -> None:
    assert [str(a) for a in Alias] == ["production", "candidate", "canary"] == [PRODUCTION, CANDIDATE, CANARY]
    assert [str(s) for s in VersionStatus] == ["ready", "rejected", "broken"]
    assert [str(s) for s in RunStatus] == ["queued", "running", "succeeded", "failed", "rejected"]
    assert AdapterRef.parse("bot") == AdapterRef("bot", alias="production")
    assert (str(AdapterRef.parse("bot")), repr(PRODUCTION), f"{VersionStatus.BROKEN!r}") == (
        "bot@production", "'production'", "'broken'")  # messages quote them with !r


def test_statuses_and_aliases_are_stored_as_their_words(store_location, tmp_path: Path) -> None:
    base_dir = write_tiny_base(tmp_path / "base")
    registry = Registry(store_location("registry.db"), tmp_path / "adapters", BaseModelInfo.from_dir(base_dir),
                        max_rank=8)
    registry.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias=CANDIDATE)
    registry.register("bot", write_lora(tmp_path / "a2", base_dir, seed=2), status=VersionStatus.REJECTED)
    with pytest.raises(InvalidAdapter, match="status must be one of"):
        registry.register("bot", write_lora(tmp_path / "a3", base_dir, seed=3), status="broken")
    rows = registry.db.read("SELECT version, status FROM versions ORDER BY version")
    assert rows == [(1, "ready"), (2, "rejected")] and all(type(s) is str for _, s in rows)
    assert registry.db.read("SELECT alias FROM aliases") == [("candidate",)]
    runs = RunStore(store_location("trainer.db"))
    run_id = runs.create("bot")
    assert runs.queued_adapters() == ["bot"] and runs.get(run_id).status == "queued"
    runs.finish(run_id, RunStatus.SUCCEEDED)
    assert runs.db.read("SELECT status FROM runs") == [("succeeded",)]
    with pytest.raises(ValueError, match="not a finished status"):
        runs.finish(run_id, RunStatus.RUNNING)
    assert set(FINISHED) == {"succeeded", "failed", "rejected"}
