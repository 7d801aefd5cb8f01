"""A deterministic stand-in for vLLM, for fast route tests only (integration tests use the real engine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from server.engine import AdapterHandle, ChoiceDelta, GenerationUpdate, Sampling
from server.errors import AdapterLoadFailed, EngineUnavailable


class FakeEngine:
    """Answers `<adapter name or 'base'> says: <last user words>`, one word per token."""

    max_model_len = 64

    def __init__(self) -> None:
        self.loaded: list[str] = []
        self.fail_paths: set[str] = set()
        self.delay = 0.0
        self.dead = False  # set to play an engine that died under the gateway

    def encode_chat(self, messages: list[dict]) -> list[int]:
        return [len(w) for m in messages for w in m["content"].split()] + [0, 0]

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling, request_id: str, adapter: AdapterHandle | None
    ) -> AsyncIterator[GenerationUpdate]:
        if self.dead:
            raise EngineUnavailable("the inference engine has stopped")
        words = [adapter.name if adapter else "base", "says"] + [str(i) for i in prompt_ids[:-2]]
        words = words[: sampling.max_tokens]
        for position, word in enumerate(words):
            await asyncio.sleep(self.delay)
            last = position == len(words) - 1
            finish = ("stop" if len(words) < sampling.max_tokens else "length") if last else None
            yield GenerationUpdate(
                prompt_tokens=len(prompt_ids),
                deltas=[ChoiceDelta(i, (" " if position else "") + word, 1, finish) for i in range(sampling.n)],
                finished=last,
            )

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        if adapter.path in self.fail_paths:
            raise AdapterLoadFailed(f"cannot load {adapter.name}: broken weights")
        self.loaded.append(adapter.name)

    async def check_health(self) -> None:
        if self.dead:
            raise RuntimeError("EngineCore died")

    def shutdown(self) -> None:
        return None
