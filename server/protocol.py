"""Wire types of the gateway's OpenAI-compatible API that are Flywheel's own.

Request and response bodies of `/v1/chat/completions` and `/v1/completions` are vLLM's own types
(`vllm/entrypoints/openai/*/protocol.py`), validated in server/engine.py; Flywheel adds two request fields
(`adapter`, `store`), one response field (`adapter`) and the refusals below.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

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

    model_config = ConfigDict(extra="allow", strict=True)  # no `"stream": 0`: the document says boolean

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


# --- The documented request bodies (OpenAPI only) -------------------------------------------------------------
# The routes validate with vLLM's own request types (server/engine.py), which accept far more than this gateway
# can describe in JSON Schema (cross-field rules such as "a named tool_choice must name one of `tools`"). The
# document lists the parameters with their real bounds, so every body it allows is served: it is the contract
# that the schemathesis run in tests/gateway/test_api_contract.py holds the app to.

T = TypeVar("T")
NonEmpty = Annotated[T, Field(min_length=1)]
ADAPTER_REF = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(@[A-Za-z0-9][A-Za-z0-9_-]{0,63})?$"  # adapters/names.py


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class TextMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user"]
    content: str | list[TextPart]
    name: str | SkipJsonSchema[None] = None


class FunctionCall(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(BaseModel):  # takes a response message back as is (clients echo it with its extras)
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | SkipJsonSchema[None] = None
    name: str | SkipJsonSchema[None] = None


class ToolMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["tool"]
    content: str
    tool_call_id: str


class FunctionDef(BaseModel):  # vLLM ignores unknown keys here
    name: str
    description: str | None = None
    parameters: dict | None = Field(None, description="The JSON Schema of the function's arguments.")


class Tool(BaseModel):  # vLLM ignores unknown keys here
    type: Literal["function"] = "function"
    function: FunctionDef


class JsonSchemaFormat(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: dict = Field(alias="schema", description="The JSON Schema the answer must follow.")
    strict: bool | None = None


class PlainFormat(BaseModel):
    type: Literal["text", "json_object"]


class SchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


class SamplingFields(BaseModel):
    """What chat and text completions share, with the bounds vLLM checks. The routes check these fields in strict
    mode (server/routes/chat.py): vLLM's lax pydantic types would also take `"echo": 0` or `"n": "2"`."""

    # vLLM's rule: greedy sampling answers one choice only. Only temperature 0 is greedy: vLLM raises any
    # temperature in (0, 0.01) to 0.01 before its greedy test (SamplingParams.__post_init__, _MAX_TEMP).
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "if": {"properties": {"temperature": {"type": "number", "maximum": 0}},
               "required": ["temperature"]},
        "then": {"properties": {"n": {"type": ["integer", "null"], "maximum": 1}}},
    })

    model: str | None = Field(None, description="The base model's name, or an adapter's (as `adapter`).")
    adapter: str | None = Field(None, pattern=ADAPTER_REF, description="`name`, `name@<version>` or `name@<alias>`.")
    store: bool = Field(True, description="false keeps this completion out of the feedback log.")
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_N)
    stop: NonEmpty[str] | Annotated[list[NonEmpty[str]], Field(min_length=1, max_length=4)] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    user: str | None = None


class ChatCompletionBody(SamplingFields):
    """POST /v1/chat/completions. vLLM's other chat parameters (`tool_choice`, `top_k`, `min_p`, ...) are served
    as vLLM defines them; see the README for what is honoured and refused."""

    messages: list[TextMessage | AssistantMessage | ToolMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    response_format: PlainFormat | SchemaFormat | None = None
    tools: NonEmpty[list[Tool]] | None = None


class CompletionBody(SamplingFields):
    """POST /v1/completions (legacy): a raw prompt, no chat template. vLLM's other parameters are served as vLLM
    defines them; see the README."""

    prompt: NonEmpty[str] | NonEmpty[list[str]] | NonEmpty[list[Annotated[int, Field(ge=0)]]] = Field(
        description="Text, texts, or token ids.")
    n: int = Field(1, ge=1, le=MAX_N)
    echo: bool | None = None
