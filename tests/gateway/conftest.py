"""Route tests: the real app with a fake engine, over FastAPI's TestClient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.settings import Settings
from server.app import create_app
from tests.fake_engine import FakeEngine
from tests.lora_factory import write_tiny_base


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return write_tiny_base(tmp_path / "base")


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


def start(settings: Settings, engine: FakeEngine) -> Iterator[TestClient]:
    with TestClient(create_app(settings, lambda _: engine)) as client:
        deadline = time.time() + 120  # generous: a busy 2-core machine once took over 10 s (a flake, not a failure)
        while client.get("/ready").status_code != 200:
            assert time.time() < deadline, client.get("/ready").json()
            time.sleep(0.02)
        yield client


@pytest.fixture
def settings(tmp_path: Path, base_dir: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_path=base_dir, registry_poll_seconds=0.05, max_lora_rank=8,
                    train_lora_rank=8)


@pytest.fixture
def client(settings: Settings, engine: FakeEngine) -> Iterator[TestClient]:
    yield from start(settings, engine)
