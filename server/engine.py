"""The vLLM engine behind the gateway: with its other half `vllm_serving.py`, the only modules of the gateway
that import vLLM (the modules in `server/vllm_plugins/` are loaded by vLLM itself, as plugins).

Requests are served by vLLM's own OpenAI serving layer (`OpenAIServingChat`, `OpenAIServingCompletion`:
chat templating, sampling parameters, structured outputs, tool parsers, logprobs and SSE framing), not by
copies of it. Flywheel injects one thing into it: the LoRA request its resolver chose (see `_Binding`).
The rest of the server talks to the small `Engine` protocol below, so route tests can use a fake.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from flywheel.dtype import resolve_dtype
from flywheel.settings import Settings
from server.errors import AdapterLoadFailed, BadRequest, EngineUnavailable, GatewayError, ModelNotFound, PromptTooLong
from server.parallelism import Devices, check_parallelism
from server.vllm_plugins.engine_wait import SPIN_WAIT_ENV
from server.vllm_plugins.orphan_guard import GATEWAY_PID_ENV

logger = logging.getLogger(__name__)

Endpoint = Literal["chat", "completion"]
# SmolLM2's own template renders neither tools nor tool calls; this one is the same ChatML plus Hermes-style
# tool blocks, the format vLLM's `hermes` tool parser reads back.
TOOLS_TEMPLATE = Path(__file__).parent / "chat_templates" / "chatml_tools.jinja"


@dataclass(frozen=True)
class AdapterHandle:
    """One adapter version as vLLM knows it: a never-reused name and id (invariant 5)."""

    name: str
    id: int
    path: str


@dataclass
class EngineCall:
    """One OpenAI request for the engine, with the adapter Flywheel resolved for it."""

    endpoint: Endpoint
    request: Any  # vLLM's ChatCompletionRequest / CompletionRequest, from `parse_request`
    adapter: AdapterHandle | None
    model: str  # the `model` the response names
    # filled in by the engine while it generates
    first_token_at: float | None = None  # on time.perf_counter's clock
    time_per_output_token: float | None = None  # seconds, once the request finished with 2 tokens or more
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Served:
    """What the engine answered: a whole response body, or server-sent events (`data: ...\\n\\n`)."""

    body: dict | None = None
    events: AsyncIterator[str] | None = None


class Engine(Protocol):
    max_model_len: int

    async def serve(self, call: EngineCall) -> Served: ...

    async def load_adapter(self, adapter: AdapterHandle) -> None: ...

    async def check_health(self) -> None: ...

    def shutdown(self) -> None: ...


def parse_request(endpoint: Endpoint, body: dict) -> Any:
    """Validate an OpenAI body with vLLM's own request type; raises FastAPI's validation error (-> 400)."""
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    model = ChatCompletionRequest if endpoint == "chat" else CompletionRequest
    try:
        return model.model_validate(body)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_context=False, include_url=False)) from None
    except Exception as e:  # vLLM's own VLLMValidationError, raised past pydantic by its model validators
        raise engine_error(e) from e


def request_fields(endpoint: Endpoint) -> frozenset[str]:
    """Every body field vLLM's request type declares for `endpoint`."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    model = ChatCompletionRequest if endpoint == "chat" else CompletionRequest
    return frozenset(model.model_fields)


def error_from(status: int, message: str, param: str | None = None) -> GatewayError:
    """A vLLM error response (status + message) as the gateway's typed error."""
    if status == 404:
        return ModelNotFound(message, param)
    if status >= 500:
        return EngineUnavailable(message)
    if "maximum context length" in message or "maximum model length" in message:
        return PromptTooLong(message, param or "messages")
    error = BadRequest(message, param)
    error.status = status  # 400, 422, 429 as vLLM chose them
    return error


def engine_error(exc: Exception) -> GatewayError:
    """Anything vLLM raised for a request, classified as vLLM's own server does (client 4xx or server 5xx)."""
    from vllm.entrypoints.serve import create_error_response

    error = create_error_response(exc).error
    return error_from(error.code, error.message, error.param)


# The request being set up, for the hooks vLLM's serving classes call while they do it (all synchronously,
# inside `VLLMEngine.serve`): they read the LoRA and model name from here instead of from `request.model`.
_CALL: contextvars.ContextVar[tuple[EngineCall, Any] | None] = contextvars.ContextVar("flywheel_call", default=None)


def engine_args(settings: Settings) -> Any:
    """vLLM's AsyncEngineArgs for `settings`: the pass-through settings (`Settings.engine_args`) and what Flywheel
    decides itself (the model directory, the resolved dtype, LoRA on, no per-request log lines, stats kept)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=str(settings.resolved_model_path),
        dtype=resolve_dtype(settings.dtype, "serving").name,
        enable_lora=True,
        enable_log_requests=False,
        # vLLM's default, relied on: its per-request timing (`counted`) and its `vllm:*` metrics (server/metrics.py)
        # exist only with stats on (measured: about 0.13 ms of frontend time per engine step of 16 requests on a CPU).
        disable_log_stats=False,
        **settings.engine_args(),
    )


def devices() -> Devices:
    """The devices vLLM would place this machine's workers on, counted with vLLM's own helpers."""
    from vllm import envs
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return Devices(current_platform.device_name, current_platform.device_count())
    from vllm.utils import cpu_resource_utils

    bind = envs.VLLM_CPU_OMP_THREADS_BIND
    if bind == "nobind":
        return Devices("cpu", 0, "nobind")
    if bind != "auto":
        return Devices("cpu", len(bind.split("|")), "manual")
    if os.environ.get("VLLM_CPU_SIM_MULTI_NUMA", "0") != "0":  # read as vLLM reads it (ompmultiprocessing.py)
        return Devices("cpu", len(cpu_resource_utils.get_allowed_cpu_list()), "simulated")
    return Devices("cpu", len(cpu_resource_utils.get_visible_memory_node()), "auto")


class VLLMEngine:
    """vLLM's AsyncLLM with LoRA enabled (engine core in a child process), served by vLLM's OpenAI classes."""

    def __init__(self, settings: Settings):
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        # read by server/vllm_plugins/orphan_guard.py in the processes vLLM starts: they end when this process dies
        os.environ[GATEWAY_PID_ENV] = str(os.getpid())
        if current_platform.is_cpu():
            # vLLM sizes the CPU KV cache from this variable only; it has no engine argument for it.
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
            # read by server/vllm_plugins/engine_wait.py, the plugin vLLM loads in its engine-core and worker processes
            os.environ[SPIN_WAIT_ENV] = "1" if settings.engine_spin_wait else "0"
        check_parallelism(settings, devices())
        args = engine_args(settings)
        self.dtype = args.dtype
        logger.info("starting vLLM on %s (%s, %s)", settings.resolved_model_path, current_platform.device_name,
                    args.dtype)
        self._llm = AsyncLLM.from_engine_args(args)
        self.max_model_len = settings.max_model_len
        from server.vllm_serving import build_serving

        self._chat, self._completion = build_serving(self._llm, settings)

    async def serve(self, call: EngineCall) -> Served:
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.exceptions import EngineDeadError

        a = call.adapter
        lora = LoRARequest(a.name, a.id, a.path) if a else None
        token = _CALL.set((call, lora))
        try:
            if call.endpoint == "chat":
                result = await self._chat.create_chat_completion(call.request, None)
            else:
                result = await self._completion.create_completion(call.request, None)
        except EngineDeadError as e:
            raise EngineUnavailable("the inference engine has stopped; the gateway must be restarted") from e
        except Exception as e:
            raise engine_error(e) from e
        finally:
            _CALL.reset(token)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # vLLM answers a cancelled non-streamed request with a "Client disconnected" error body (its engine
            # request is aborted by then); the caller's task was cancelled, so it must see a cancellation
            raise asyncio.CancelledError
        if isinstance(result, ErrorResponse):
            raise error_from(result.error.code, result.error.message, result.error.param)
        if isinstance(result, AsyncIterator):
            return Served(events=result)
        return Served(body=result.model_dump())

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


def bound_call() -> tuple[EngineCall, Any] | None:
    """The call (and its LoRARequest) `VLLMEngine.serve` is setting up, if any."""
    return _CALL.get()


async def counted(call: EngineCall, outputs: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Pass vLLM's RequestOutputs through, noting on `call` the token counts and, from vLLM's own timing of the
    request, when its first token was made and its time per output token."""
    async for out in outputs:
        stats = out.metrics  # vLLM's RequestStateStats; None when its stat logging is off
        if call.first_token_at is None:
            call.first_token_at = first_token_time(stats)
        call.prompt_tokens = len(out.prompt_token_ids or ())
        call.completion_tokens += sum(len(o.token_ids) for o in out.outputs)  # DELTA or FINAL_ONLY: no overlap
        if out.finished:
            call.time_per_output_token = time_per_output_token(stats)
        yield out


def first_token_time(stats: Any) -> float:
    """When the request's first token was made, on time.perf_counter's clock (now, without vLLM's stats).

    A non-streamed request's only output arrives when it ends, so its arrival time would make the time to
    first token equal the latency. vLLM's engine core stamps the first token with time.monotonic()
    (`RequestStateStats.first_token_ts`, vllm/v1/metrics/stats.py); that clock is the machine's, shared by the
    engine-core process, so its age is read here and counted back from now.
    """
    now = time.perf_counter()
    if stats is None or not stats.first_token_ts:
        return now
    return now - max(0.0, time.monotonic() - stats.first_token_ts)


def time_per_output_token(stats: Any) -> float | None:
    """Mean time between a finished request's output tokens, as vLLM computes it (decode time over the tokens
    after the first, `IterationStats.update_from_finished_request`); None below two tokens or without stats."""
    if stats is None or stats.num_generation_tokens < 2:
        return None
    return (stats.last_token_ts - stats.first_token_ts) / (stats.num_generation_tokens - 1)
