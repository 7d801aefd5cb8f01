"""Registry: immutable versions, atomic alias moves with history, rollback, validation before writing.

Every test that takes `registry` runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import AdapterNotFound, Conflict, InvalidAdapter, InvalidName
from adapters.names import AdapterRef
from adapters.registry import Registry
from tests.lora_factory import write_lora, write_tiny_base


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_tiny_base(tmp_path / "base")


@pytest.fixture
def registry(tmp_path: Path, base_dir: Path, store_location) -> Registry:
    location = store_location("registry.db")
    return Registry(location, tmp_path / "adapters", BaseModelInfo.from_dir(base_dir), max_rank=8)


def snapshot(registry: Registry, root: Path) -> tuple:
    """Everything a failed operation must leave untouched: rows and files."""
    tables = ("versions", "aliases", "alias_events", "status_events")
    rows = [list(registry.db.query(f"SELECT * FROM {t}")) for t in tables]
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return json.dumps(rows, default=str), files


def test_register_assigns_increasing_immutable_versions(registry: Registry, base_dir: Path, tmp_path: Path):
    v1 = registry.register("support", write_lora(tmp_path / "a1", base_dir, seed=1))
    v2 = registry.register("support", write_lora(tmp_path / "a2", base_dir, seed=2), alias="production")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.id != v2.id and v1.lora_name == "support@1"
    assert (v1.path / "adapter_model.safetensors").is_file()
    assert v1.sha256 != v2.sha256 and v1.rank == 4 and v1.target_modules == ["q_proj", "v_proj"]
    assert registry.resolve("support").version == 2
    assert registry.resolve("support@1").version == 1
    assert not list((tmp_path / "adapters").glob(".staging-*"))


def test_alias_moves_are_recorded_and_rollback_returns(registry: Registry, base_dir: Path, tmp_path: Path):
    for seed in (1, 2, 3):
        registry.register("bot", write_lora(tmp_path / f"a{seed}", base_dir, seed=seed))
    registry.promote("bot", 1, actor="alice", reason="first")
    registry.set_alias("bot", "candidate", 3, actor="trainer", reason="gate passed")
    registry.promote("bot", actor="bob")  # the candidate
    assert registry.resolve("bot").version == 3
    event = registry.rollback("bot", actor="carol", reason="bad answers")
    assert (event.from_version, event.to_version, event.actor, event.reason) == (3, 1, "carol", "bad answers")
    registry.rollback("bot", to=2)
    assert registry.resolve("bot@production").version == 2
    history = [(e.alias, e.from_version, e.to_version, e.actor) for e in registry.history("bot")]
    assert history == [("production", None, 1, "alice"), ("candidate", None, 3, "trainer"),
                       ("production", 1, 3, "bob"), ("production", 3, 1, "carol"), ("production", 1, 2, "cli")]


def test_change_token_moves_on_every_change(registry: Registry, base_dir: Path, tmp_path: Path):
    token = registry.change_token()
    registry.register("bot", write_lora(tmp_path / "a", base_dir))
    assert registry.change_token() != token
    token = registry.change_token()
    registry.promote("bot", 1)
    assert registry.change_token() != token


@pytest.mark.parametrize("ref", ["../etc", "a/b", "", "x" * 65, "bot@", "bot@a/b", "@1"])
def test_bad_references_are_rejected(ref: str):
    with pytest.raises(InvalidName):
        AdapterRef.parse(ref)


def test_unknown_things_are_not_found(registry: Registry, base_dir: Path, tmp_path: Path):
    with pytest.raises(AdapterNotFound):
        registry.resolve("ghost")
    registry.register("bot", write_lora(tmp_path / "a", base_dir))
    with pytest.raises(AdapterNotFound, match="no 'production'"):
        registry.resolve("bot")
    with pytest.raises(AdapterNotFound):
        registry.resolve("bot@9")
    with pytest.raises(Conflict):
        registry.rollback("bot")
    with pytest.raises(Conflict):
        registry.promote("bot")  # no candidate


def test_rejected_versions_cannot_take_an_alias(registry: Registry, base_dir: Path, tmp_path: Path):
    registry.register("bot", write_lora(tmp_path / "a", base_dir), status="rejected", metrics={"reason": "gate"})
    with pytest.raises(Conflict, match="rejected"):
        registry.promote("bot", 1)


BROKEN = {
    "missing config": lambda f: (f / "adapter_config.json").unlink(),
    "config not json": lambda f: (f / "adapter_config.json").write_text("{nope"),
    "corrupt weights": lambda f: (f / "adapter_model.safetensors").write_bytes(b"\x00\x01garbage"),
    "truncated weights": lambda f: (f / "adapter_model.safetensors").write_bytes(
        (f / "adapter_model.safetensors").read_bytes()[:200]),
    "missing weights": lambda f: (f / "adapter_model.safetensors").unlink(),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_broken_folders_register_nothing(registry: Registry, base_dir: Path, tmp_path: Path, breakage: str):
    folder = write_lora(tmp_path / "a", base_dir)
    BROKEN[breakage](folder)
    before = snapshot(registry, tmp_path / "adapters")
    with pytest.raises(InvalidAdapter):
        registry.register("bot", folder)
    assert snapshot(registry, tmp_path / "adapters") == before


def test_every_problem_is_reported_at_once(registry: Registry, base_dir: Path, tmp_path: Path):
    folder = write_lora(tmp_path / "a", base_dir, rank=4, config_overrides={
        "r": 32, "use_dora": True, "modules_to_save": ["lm_head"], "target_modules": ["q_proj", "w_gate"],
    })
    with pytest.raises(InvalidAdapter) as info:
        registry.register("bot", folder)
    text = " | ".join(info.value.problems)
    for expected in ("exceeds max_lora_rank=8", "DoRA", "modules_to_save", "w_gate"):
        assert expected in text
    assert registry.adapters() == []


def test_adapter_for_another_base_model_is_rejected(registry: Registry, tmp_path: Path):
    other = write_tiny_base(tmp_path / "other", hidden=32)
    with pytest.raises(InvalidAdapter, match="another base model"):
        registry.register("bot", write_lora(tmp_path / "a", other))
