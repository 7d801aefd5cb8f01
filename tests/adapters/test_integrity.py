"""A version's files against what was registered; the broken status, its history and the change token."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from adapters.base_model import BaseModelInfo
from adapters.errors import Conflict, RegistryBusy
from adapters.integrity import IntegrityCache, verify
from adapters.registry import Registry
from tests.adapters.test_registry_busy import locked_by_another_process
from tests.lora_factory import write_lora, write_tiny_base


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_tiny_base(tmp_path / "base")


@pytest.fixture
def registry(tmp_path: Path, base_dir: Path, store_location) -> Registry:
    """On SQLite and on PostgreSQL."""
    return Registry(store_location("registry.db"), tmp_path / "adapters", BaseModelInfo.from_dir(base_dir),
                    max_rank=8, busy_timeout=0.5)


def test_registration_records_every_served_file(registry: Registry, base_dir: Path, tmp_path: Path):
    v1 = registry.register("bot", write_lora(tmp_path / "a", base_dir))
    assert set(v1.files) == {"adapter_config.json", "adapter_model.safetensors"}
    assert v1.files["adapter_model.safetensors"]["sha256"] == v1.sha256
    assert verify(v1) == []


def test_each_breakage_has_its_reason(registry: Registry, base_dir: Path, tmp_path: Path):
    v1 = registry.register("bot", write_lora(tmp_path / "a", base_dir))
    weights, config = v1.path / "adapter_model.safetensors", v1.path / "adapter_config.json"
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert verify(v1) == ["adapter_model.safetensors does not match the sha256 recorded at registration"
                          " (corrupted or replaced)"]
    weights.write_bytes(good[:10])
    assert "truncated" in verify(v1)[0]
    weights.unlink()
    config.write_text("{}")
    size = v1.files["adapter_config.json"]["size"]
    assert verify(v1) == [f"adapter_config.json is 2 bytes where {size} were registered (truncated or replaced)",
                          "adapter_model.safetensors is missing"]
    legacy = dataclasses.replace(v1, files={})  # registered before manifests: weights' sha256 + a readable config
    weights.write_bytes(good)
    config.write_text("{not json")
    assert [p.split(" (")[0] for p in verify(legacy)] == ["adapter_config.json cannot be read as JSON"]
    for path in (weights, config):
        path.unlink()
    v1.path.rmdir()
    assert verify(v1) == ["its folder is missing from the adapters directory"]


def test_cache_hashes_again_only_when_the_files_change(registry: Registry, base_dir: Path, tmp_path: Path):
    v1 = registry.register("bot", write_lora(tmp_path / "a", base_dir))
    cache = IntegrityCache()
    assert cache.cached(v1) is None and cache.check(v1) == []
    assert cache.cached(v1) == []
    (v1.path / "adapter_model.safetensors").write_bytes(b"x")
    assert cache.cached(v1) is None  # size/mtime changed: the verdict is stale
    assert "truncated" in cache.check(v1)[0]


def test_mark_broken_moves_the_token_once_and_blocks_aliases(registry: Registry, base_dir: Path, tmp_path: Path):
    registry.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias="production")
    registry.register("bot", write_lora(tmp_path / "a2", base_dir, seed=2))
    token = registry.change_token()
    assert registry.mark_broken("bot", 2, "weights missing", actor="gateway")
    assert registry.change_token() != token
    token = registry.change_token()
    assert not registry.mark_broken("bot", 2, "weights missing")  # already broken: nothing written
    assert registry.change_token() == token
    v2 = registry.get_version("bot", 2)
    assert (v2.status, v2.status_reason) == ("broken", "weights missing")
    with pytest.raises(Conflict, match=r"bot@2 is broken \(weights missing\)"):
        registry.promote("bot", 2)
    assert registry.mark_ready("bot", 2, actor="alice")
    assert registry.get_version("bot", 2).status_reason == ""
    assert registry.promote("bot", 2).to_version == 2
    history = [(e.version, e.from_status, e.to_status, e.actor) for e in registry.status_history("bot")]
    assert history == [(2, "ready", "broken", "gateway"), (2, "broken", "ready", "alice")]


def test_a_registry_file_from_before_manifests_opens_and_serves(tmp_path: Path, base_dir: Path):
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)  # the first release's versions table: no files, no status_reason
    old.execute("CREATE TABLE versions (id INTEGER PRIMARY KEY AUTOINCREMENT, adapter TEXT NOT NULL, version INTEGER"
                " NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, rank INTEGER NOT NULL, alpha REAL NOT NULL,"
                " target_modules TEXT NOT NULL, base_fingerprint TEXT NOT NULL, created_at REAL NOT NULL, source TEXT"
                " NOT NULL, parent_version INTEGER, metrics TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL DEFAULT"
                " 'ready', created_by TEXT NOT NULL DEFAULT '', UNIQUE (adapter, version))")
    old.execute("INSERT INTO versions (adapter, version, path, sha256, rank, alpha, target_modules, base_fingerprint,"
                " created_at, source) VALUES ('bot', 1, 'bot/v1', 'abc', 4, 8, '[]', 'f', 0, 'uploaded')")
    old.commit()
    old.close()
    registry = Registry(db, tmp_path / "adapters", BaseModelInfo.from_dir(base_dir), max_rank=8)
    v1 = registry.get_version("bot", 1)
    assert (v1.files, v1.status_reason) == ({}, "")
    assert verify(v1) == ["its folder is missing from the adapters directory"]
    assert registry.register("bot", write_lora(tmp_path / "a", base_dir)).files


def test_reads_go_on_while_a_write_of_this_process_waits_for_the_lock(base_dir: Path, tmp_path: Path):
    db = tmp_path / "registry.db"
    registry = Registry(db, tmp_path / "adapters", BaseModelInfo.from_dir(base_dir), max_rank=8, busy_timeout=3)
    registry.register("bot", write_lora(tmp_path / "a1", base_dir, seed=1), alias="production")
    errors: list[Exception] = []
    with locked_by_another_process(db):
        writer = threading.Thread(target=lambda: _catch(errors, lambda: registry.mark_broken("bot", 1, "x")))
        writer.start()
        time.sleep(0.2)  # let the writer take this process's write lock and wait on the file's
        assert registry.resolve("bot").version == 1 and registry.change_token()  # not behind the writer
        still_waiting = writer.is_alive()
        writer.join(10)
    assert still_waiting, "the reads waited for the write"
    assert isinstance(errors[0], RegistryBusy) and registry.get_version("bot", 1).status == "ready"


def _catch(errors: list[Exception], call) -> None:
    try:
        call()
    except Exception as e:
        errors.append(e)


def test_flywheel_adapters_show_says_why_a_version_is_broken(tmp_path: Path, base_dir: Path):
    from typer.testing import CliRunner

    from flywheel.cli import app
    from flywheel.settings import Settings

    env = {"FLYWHEEL_MODEL_PATH": str(base_dir), "FLYWHEEL_DATA_DIR": str(tmp_path / "data"),
           "FLYWHEEL_MAX_LORA_RANK": "8", "FLYWHEEL_TRAIN_LORA_RANK": "8", "COLUMNS": "300"}
    settings = Settings(data_dir=tmp_path / "data", model_path=base_dir)
    registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base_dir), max_rank=8)
    registry.register("bot", write_lora(tmp_path / "a", base_dir), alias="production")
    registry.mark_broken("bot", 1, "adapter_model.safetensors is missing")
    result = CliRunner().invoke(app, ["adapters", "show", "bot"], env=env)
    assert result.exit_code == 0 and "broken: adapter_model.safetensors is missing" in result.output
