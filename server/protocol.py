"""Wire types of the gateway's OpenAI-compatible API that are Flywheel's own.

Request and response bodies of `/v1/chat/completions` and `/v1/completions` are vLLM's own types
(`vllm/entrypoints/openai/*/protocol.py`), validated in server/engine.py; Flywheel adds two request fields
(`adapter`, `store`), one response field (`adapter`) and the refusals below.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_N = 8  # choices per request: more would let one request fill the engine's batch

# Fields vLLM's request types declare that this gateway cannot honour: a request that sets one gets a 400
# naming it, instead of vLLM ignoring it without a word.
REFUSED = {
    "documents": "the model's chat template does not render documents",
    "reasoning_effort": "the model has no reasoning mode",
    "thinking_token_budget": "the model has no reasoning mode",
    "kv_transfer_params": "the engine has no KV-cache connector",
    "ec_transfer_params": "the engine has no encoder-cache connector",
    "mm_processor_kwargs": "the model is text-only",
    "media_io_kwargs": "the model is text-only",
    "request_id": "the gateway assigns ids (feedback refers to them)",
}


class FlywheelFields(BaseModel):
    """Flywheel's fields in a completion request, beside OpenAI's (vLLM's request type, documented by vLLM)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, description="The base model's name, or an adapter's (as `adapter`).")
    adapter: str | None = Field(None, description="`name`, `name@<version>` or `name@<alias>`.")
    store: bool = Field(True, description="false keeps this completion out of the feedback log.")
    stream: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "flywheel"
    root: str | None = Field(None, description="The model this one is derived from at the start of its lineage.")
    parent: str | None = Field(None, description="The model this one was trained from (a version or the base).")
    version: int | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
