"""Console tests: the real gateway (fake engine) under uvicorn, driven by Playwright in Debian's headless chromium
(tests/browser.py, shared with the console's test against the real engine in tests/integration).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from adapters.base_model import BaseModelInfo
from adapters.registry import Registry
from adapters.runs import RunStore
from flywheel.settings import Settings
from server.app import create_app
from tests import browser as chromium_browser
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: F401 (docs/console_shots.py imports them from here)
from tests.fake_engine import FakeEngine
from tests.lora_factory import write_lora, write_tiny_base

ADMIN_KEY = "console-test-key"
CANARY_MIN_FEEDBACK = 3  # ratings each version needs before the canary review decides
GATE = {"candidate_correctness": 0.62, "production_correctness": 0.58, "base_correctness": 0.55,
        "closed_book_questions": 50, "candidate_ppl": 11.5, "production_ppl": 11.2, "base_ppl": 11.0,
        "correctness_samples": {"candidate": [{"question": "Capital of France?", "answer": "Paris"}]}}
PLAN = ["sft on 8 examples", "dpo on 4 pairs"]
LOSS_CURVE = [["sft", 1, 2.5], ["sft", 2, 1.9], ["sft", 3, 1.2], ["dpo", 1, 0.69], ["dpo", 2, 0.41]]
STAGES = [{"name": "sft", "examples": 8, "steps": 3, "train_loss": 1.87, "seconds": 4.2},
          {"name": "dpo", "examples": 4, "steps": 2, "train_loss": 0.55, "seconds": 3.1}]
REJECTED_REASON = "forgetting: perplexity on general text is 19.00 against production's 11.20 (allowed up to 12.32)"


@dataclass
class Gateway:
    url: str
    registry: Registry
    settings: Settings

    def served_by(self, adapter: str = "bot") -> str:
        """Which version answers a chat request for `adapter`, through the public API."""
        body = {"messages": [{"role": "user", "content": "Hi there"}], "adapter": adapter}
        return httpx.post(f"{self.url}/v1/chat/completions", json=body, timeout=60).json()["adapter"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(registry: Registry, base: Path, tmp: Path) -> None:
    """bot: v1 production, v2 candidate (trained, gate numbers), v3 rejected by the gate; helper: v1;
    pilot: v1 production, v2 canary."""
    lineage = {"run_id": 1, "feedback_count": 12, "feedback_ids": [f"fb-{i}" for i in range(12)],
               "plan": PLAN, "dataset_hash": "d4t4s3t"}
    registry.register("bot", write_lora(tmp / "b1", base, seed=1), alias="production")
    registry.register("bot", write_lora(tmp / "b2", base, seed=2), source="trained", parent_version=1,
                      metrics={"gate": GATE, "gate_passed": True, "gate_reasons": [], **lineage}, alias="candidate")
    registry.register("bot", write_lora(tmp / "b3", base, seed=3), source="trained", parent_version=1,
                      metrics={"gate": {**GATE, "candidate_ppl": 19.0}, "gate_reasons": [REJECTED_REASON],
                               "run_id": 2}, status="rejected")
    registry.register("helper", write_lora(tmp / "h1", base, seed=4), alias="production")
    registry.register("pilot", write_lora(tmp / "p1", base, seed=5), alias="production")
    registry.register("pilot", write_lora(tmp / "p2", base, seed=6), source="trained", parent_version=1,
                      alias="canary")


def seed_runs(runs: RunStore) -> None:
    """Run 1 registered bot v2 (sft then dpo, its loss curve as trainer/progress.py writes it); run 2, v3."""
    first = runs.create("bot", status="running")
    runs.finish(first, "succeeded", result_version=2, stage="done", step=2, total_steps=2, loss=0.41,
                metrics={"loss_curve": LOSS_CURVE, "gate": GATE, "stages": STAGES})
    second = runs.create("bot", status="running")
    runs.finish(second, "rejected", result_version=3, stage="done", error="gate: " + REJECTED_REASON,
                metrics={"gate": {**GATE, "candidate_ppl": 19.0}, "stages": STAGES[:1]})


def rate(url: str, ratings: list[tuple[str, str | None]], adapter: str = "bot") -> None:
    """Chat with `adapter` (bot's production version by default) and rate each answer through the public API."""
    for rating, correction in ratings:
        body = {"messages": [{"role": "user", "content": "mail me at jane.doe@example.com please"}],
                "adapter": adapter}
        completion = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
        assert "@" not in adapter or completion["adapter"] == adapter
        feedback = {"completion_id": completion["id"], "rating": rating, "correction": correction}
        assert httpx.post(f"{url}/v1/feedback", json=feedback, timeout=60).status_code < 300


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The real gateway app (fake engine) under uvicorn in a thread, until the block ends; yields its URL."""
    config = uvicorn.Config(create_app(settings, lambda _: FakeEngine()), host="127.0.0.1", port=free_port(),
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-gateway", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    deadline = time.time() + 120  # generous: a busy 2-core machine once missed 30 s (a flake, not a failure)
    while True:
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "the gateway did not become ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def console_settings(tmp: Path, base: Path) -> Settings:
    return Settings(data_dir=tmp / "data", model_path=base, registry_poll_seconds=0.05, max_lora_rank=8,
                    train_lora_rank=8, admin_key=ADMIN_KEY, canary_min_feedback=CANARY_MIN_FEEDBACK)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("console")
    base = write_tiny_base(tmp / "base")
    settings = console_settings(tmp, base)
    registry = Registry(settings.registry_db, settings.adapters_dir, BaseModelInfo.from_dir(base), 8)
    seed(registry, base, tmp)
    seed_runs(RunStore(settings.trainer_db))
    with serve(settings) as url:
        rate(url, [("up", None), ("up", None), ("down", "Write <b>to</b> jane.doe@example.com instead")])
        yield Gateway(url, registry, settings)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Chromium for one test module (tests/browser.py says why not for the session)."""
    with chromium_browser.chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, gateway: Gateway) -> Iterator:
    """A fresh browser context (no cookies) per test."""
    with chromium_browser.fresh_page(browser, gateway.url) as page:
        yield page


def log_in(page, key: str = ADMIN_KEY, name: str = "") -> None:
    """Log in with `key`, and as the operator `name` when one is given."""
    if not name:
        chromium_browser.log_in(page, key)
        return
    page.goto("/console/login")
    page.fill("input[name=key]", key)
    page.fill("input[name=name]", name)
    page.click("#login button[type=submit]")
