"""vLLM's OpenAI serving classes, built on Flywheel's AsyncLLM with the adapter resolution injected.

The engine's other half (with server/engine.py, the gateway's only vLLM importers). This is the minimum of
vLLM's own `init_app_state` (vllm/entrypoints/launchers/api_server/app_state.py and
vllm/entrypoints/generate/api_router.py): one `OpenAIServingModels`, one `OnlineRenderer`, and the chat and
completion serving classes. Three hooks differ from stock vLLM, all reading the request Flywheel is serving
from `server.engine.bound_call()`:

- `_check_model` passes: the gateway already resolved `model` / `adapter` (aliases, `name@7`, canary) and
  answered 404 itself for unknown names;
- `_maybe_get_adapters` returns the LoRARequest of the version the resolver chose (vLLM would look the
  name up in its own dict of adapters loaded through its `/v1/load_lora_adapter`);
- `model_name` returns the name the response carries (the adapter's, not the version's vLLM name).

`engine_client` is AsyncLLM behind a thin proxy whose `generate` notes the first token's time and the
token counts for Flywheel's metrics, since vLLM's response only carries usage when a stream asks for it.
"""

from __future__ import annotations

import logging
from typing import Any

from vllm.entrypoints.openai.chat_completion.serving import OpenAIServingChat
from vllm.entrypoints.openai.completion.serving import OpenAIServingCompletion
from vllm.entrypoints.openai.models.protocol import BaseModelPath
from vllm.entrypoints.openai.models.serving import OpenAIServingModels
from vllm.lora.request import LoRARequest
from vllm.renderers.chat_utils import load_chat_template
from vllm.renderers.online_renderer import OnlineRenderer

from flywheel.settings import Settings
from server.engine import TOOLS_TEMPLATE, bound_call, counted

logger = logging.getLogger(__name__)


class CountingClient:
    """AsyncLLM as vLLM's serving classes see it; `generate` also counts for Flywheel's metrics."""

    def __init__(self, llm: Any):
        self._llm = llm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        bound = bound_call()
        outputs = self._llm.generate(*args, **kwargs)
        return counted(bound[0], outputs) if bound else outputs


class FlywheelModels(OpenAIServingModels):
    """vLLM's model list holder; the served name of a request is the one Flywheel resolved."""

    def model_name(self, lora_request: LoRARequest | None = None) -> str:
        bound = bound_call()
        return bound[0].model if bound else super().model_name(lora_request)


class ResolvedAdapters:
    """The LoRA lookup of vLLM's serving classes, replaced by Flywheel's resolver's answer."""

    async def _check_model(self, request: Any) -> None:
        return None  # resolved (or refused with a 404) by server/chat.py before vLLM sees the request

    def _maybe_get_adapters(self, request: Any, supports_default_mm_loras: bool = False) -> LoRARequest | None:
        bound = bound_call()
        if bound is None:  # only VLLMEngine.serve calls the serving classes
            raise RuntimeError("vLLM's serving layer was called outside VLLMEngine.serve")
        return bound[1]


class FlywheelServingChat(ResolvedAdapters, OpenAIServingChat):
    """vLLM's chat completions, on the adapter version Flywheel resolved."""


class FlywheelServingCompletion(ResolvedAdapters, OpenAIServingCompletion):
    """vLLM's (legacy) completions, on the adapter version Flywheel resolved."""


def chat_template(llm: Any, tool_parser: str | None) -> str | None:
    """The model's own chat template, or Flywheel's ChatML + tools one when tools need it and it has none."""
    own = getattr(llm.renderer.tokenizer, "chat_template", None) or ""
    if tool_parser == "hermes" and "tool" not in own and "<|im_start|>" in own:
        logger.info("the model's chat template renders no tools; using %s for tool calls", TOOLS_TEMPLATE.name)
        return load_chat_template(TOOLS_TEMPLATE)
    return None


def build_serving(llm: Any, settings: Settings) -> tuple[FlywheelServingChat, FlywheelServingCompletion]:
    """vLLM's chat and completion serving objects over `llm`, as vLLM's own server builds them."""
    client = CountingClient(llm)
    tool_parser = settings.tool_call_parser or None
    template = chat_template(llm, tool_parser)
    models = FlywheelModels(client, [BaseModelPath(settings.served_model_name, str(settings.resolved_model_path))])
    common: dict[str, Any] = dict(request_logger=None, chat_template=template, chat_template_content_format="auto",
                                  enable_auto_tools=tool_parser is not None, tool_parser=tool_parser)
    renderer = OnlineRenderer(model_config=llm.model_config, renderer=llm.renderer, **common)
    renderer.warmup()
    chat = FlywheelServingChat(client, models, "assistant", online_renderer=renderer, **common)
    completion = FlywheelServingCompletion(client, models, online_renderer=renderer, request_logger=None)
    return chat, completion
