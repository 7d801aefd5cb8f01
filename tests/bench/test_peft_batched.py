"""bench/peft_server.py's batched variant answers a mixed-adapter batch as the serial server answers each alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bench.lora import build_loras
from bench.peft_server import build_app
from bench.servers import REPO
from flywheel.settings import Settings

PROMPTS = ["Name a colour.", "What is the capital of Peru, in one word?", "Hi"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    model_dir = Settings(data_dir=REPO / "data").resolved_model_path
    adapters = tmp_path_factory.mktemp("peft-adapters")
    build_loras(model_dir, [adapters / "lora0", adapters / "lora1"], rank=8, std=0.1)
    return model_dir, adapters


async def answers(app, requests: list[tuple[str | None, str, int]]) -> list[tuple[str, int]]:
    """Every request at once; (text, completion tokens) each."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://peft", timeout=600) as c:
        async def one(adapter: str | None, prompt: str, max_tokens: int) -> tuple[str, int]:
            body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "adapter": adapter}
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"], r.json()["usage"]["completion_tokens"]

        return await asyncio.gather(*(one(*request) for request in requests))


def test_a_mixed_adapter_batch_answers_as_each_request_alone(setup: tuple[Path, Path]):
    model_dir, adapters = setup
    # the base and both adapters in one batch, prompts of different lengths (left padding), different limits
    requests = [(None, PROMPTS[0], 5), ("lora0", PROMPTS[1], 5), ("lora1", PROMPTS[2], 3)]
    serial_app = build_app(model_dir, adapters, "float32")

    async def serial_then_base() -> tuple[list, list]:  # one event loop: the app's lock belongs to it
        return (await answers(serial_app, requests),
                await answers(serial_app, [(None, prompt, limit) for _, prompt, limit in requests]))

    serial, base_alone = asyncio.run(serial_then_base())
    batched = asyncio.run(answers(build_app(model_dir, adapters, "float32", batched=True, max_batch=8), requests))
    assert batched == serial
    assert serial[2][1] <= 3  # each row keeps its own max_tokens
    assert base_alone[1:] != serial[1:]  # the adapters change the answers: those rows were not served by the base
