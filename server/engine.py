"""The vLLM engine behind the gateway: the only module of the gateway that imports vLLM (`lora_ops.py`,
`engine_wait.py` and `orphan_guard.py` are loaded by vLLM itself, as plugins).

The rest of the server talks to the small `Engine` protocol below, so route tests can use a fake.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from flywheel.dtype import resolve_dtype
from flywheel.settings import Settings
from server.engine_wait import SPIN_WAIT_ENV
from server.errors import AdapterLoadFailed, BadRequest, EngineUnavailable, PromptTooLong
from server.orphan_guard import GATEWAY_PID_ENV

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters in the engine's own terms (no vLLM types leak out)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] | None = None
    seed: int | None = None
    n: int = 1


@dataclass(frozen=True)
class AdapterHandle:
    """One adapter version as vLLM knows it: a never-reused name and id (invariant 5)."""

    name: str
    id: int
    path: str


@dataclass
class ChoiceDelta:
    index: int
    text: str
    new_tokens: int
    finish_reason: str | None = None


@dataclass
class GenerationUpdate:
    """New text since the last update, per choice."""

    prompt_tokens: int
    deltas: list[ChoiceDelta] = field(default_factory=list)
    finished: bool = False


class Engine(Protocol):
    max_model_len: int

    def encode_chat(self, messages: list[dict]) -> list[int]: ...

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, request_id: str, adapter: AdapterHandle | None
    ) -> AsyncIterator[GenerationUpdate]: ...

    async def load_adapter(self, adapter: AdapterHandle) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...


class VLLMEngine:
    """vLLM's AsyncLLM with LoRA enabled; its engine core runs in a child process (spawn)."""

    def __init__(self, settings: Settings):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        # read by server/orphan_guard.py in the processes vLLM starts: they end when this process dies
        os.environ[GATEWAY_PID_ENV] = str(os.getpid())
        if current_platform.is_cpu():
            # vLLM sizes the CPU KV cache from this variable only; it has no engine argument for it.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
            # read by server/engine_wait.py, the plugin vLLM loads in its engine-core and worker processes
            os.environ[SPIN_WAIT_ENV] = "1" if settings.engine_spin_wait else "0"
        dtype = resolve_dtype(settings.dtype, "serving")
        self.dtype = dtype.name
        args = AsyncEngineArgs(
            model=str(settings.resolved_model_path),
            served_model_name=settings.served_model_name,
            dtype=dtype.name,
            max_model_len=settings.max_model_len,
            enable_lora=True,
            max_loras=settings.max_loras,
            max_cpu_loras=settings.max_cpu_loras,
            max_lora_rank=settings.max_lora_rank,
            max_num_seqs=settings.max_num_seqs,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=settings.enforce_eager,
            enable_log_requests=False,
        )
        logger.info("starting vLLM on %s (%s, %s)", settings.resolved_model_path, current_platform.device_name,
                    dtype.name)
        self._llm = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._llm.get_tokenizer()
        self.max_model_len = settings.max_model_len

    def encode_chat(self, messages: list[dict]) -> list[int]:
        try:
            ids = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except Exception as e:  # a model's chat template may reject a conversation (jinja raise_exception)
            raise BadRequest(f"the model's chat template rejected these messages: {e}", "messages") from e
        return list(ids)

    async def generate(
        self, prompt_ids: list[int], sampling: Sampling, request_id: str, adapter: AdapterHandle | None
    ) -> AsyncIterator[GenerationUpdate]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        params = SamplingParams(
            n=sampling.n,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            stop=sampling.stop,
            seed=sampling.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        lora = LoRARequest(adapter.name, adapter.id, adapter.path) if adapter else None
        try:
            async for out in self._llm.generate(
                {"prompt_token_ids": prompt_ids}, params, request_id, lora_request=lora
            ):
                yield GenerationUpdate(
                    prompt_tokens=len(out.prompt_token_ids or prompt_ids),
                    deltas=[ChoiceDelta(o.index, o.text, len(o.token_ids), o.finish_reason) for o in out.outputs],
                    finished=out.finished,
                )
        except EngineDeadError as e:
            raise EngineUnavailable("the inference engine has stopped; the gateway must be restarted") from e
        except (VLLMClientError, ValueError) as e:
            message = str(e)
            if "longer than the maximum model length" in message or "maximum context length" in message:
                raise PromptTooLong(message, "messages") from e
            raise BadRequest(message) from e
        except EngineGenerateError as e:
            raise EngineUnavailable(f"generation failed in the engine: {e.__cause__ or e}") from e

    async def load_adapter(self, adapter: AdapterHandle) -> None:
        from vllm.lora.request import LoRARequest

        try:
            ok = await self._llm.add_lora(LoRARequest(adapter.name, adapter.id, adapter.path))
        except Exception as e:  # vLLM raises many kinds here (bad shapes, bad files, ...)
            raise AdapterLoadFailed(f"vLLM could not load {adapter.name}: {e}") from e
        if ok is False:
            raise AdapterLoadFailed(f"vLLM refused to load {adapter.name}")

    async def check_health(self) -> None:
        await self._llm.check_health()

    def shutdown(self) -> None:
        self._llm.shutdown()
