"""The OpenAPI document as the gateway's contract: what each route accepts and every status it answers.

FastAPI generates most of it; this module corrects what FastAPI cannot know: validation errors are answered 400
in OpenAI's error format (server/errors.py), not FastAPI's 422; the completion routes validate with vLLM's request
types but document the bodies of server/protocol.py; `POST /v1/feedback` reads its body itself (for speed, see
server/routes/feedback.py) and documents `FeedbackRequest`.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from pydantic import BaseModel

from server.feedback_protocol import FeedbackRequest
from server.protocol import ChatCompletionBody, CompletionBody

# the request body each of these POST routes validates itself, past FastAPI's body parameters
DOCUMENTED_BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionBody,
    "/v1/completions": CompletionBody,
    "/v1/feedback": FeedbackRequest,
}
REF = "#/components/schemas/{model}"


def _add_model(schema: dict, model: type[BaseModel]) -> dict:
    """Put `model` (and the models it uses) into the components; returns a reference to it."""
    body = model.model_json_schema(ref_template=REF, by_alias=True)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(body.pop("$defs", {}))
    components[model.__name__] = body
    return {"$ref": REF.format(model=model.__name__)}


def correct(schema: dict) -> dict:
    """The generated document, made to say what the app really does."""
    for path, model in DOCUMENTED_BODIES.items():
        ref = _add_model(schema, model)
        body = {"required": True, "content": {"application/json": {"schema": ref}}}
        schema["paths"][path]["post"]["requestBody"] = body
    for item in schema["paths"].values():
        for operation in item.values():
            operation.get("responses", {}).pop("422", None)  # never sent: validation errors are 400s
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    """Serve the corrected document at /openapi.json."""
    generate: Callable[[], dict] = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = correct(generate())
        return app.openapi_schema

    app.openapi = openapi
