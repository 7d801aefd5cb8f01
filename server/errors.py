"""Typed gateway errors, and the ONE place where any error becomes OpenAI error JSON with a status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from adapters.errors import (
    AdapterNotFound,
    AdapterUnavailable,
    Conflict,
    FilesMismatch,
    InvalidAdapter,
    InvalidName,
    RegistryBusy,
    RegistryError,
)
from adapters.runs import RunNotFound
from feedback.errors import CompletionNotFound, FeedbackError, FeedbackNotFound, InvalidFeedback, StoreUnavailable
from server.protocol import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error the gateway raises on purpose; `status`/`type`/`code` say how clients see it."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class BadRequest(GatewayError):
    code = "bad_request"


class PromptTooLong(GatewayError):
    code = "context_length_exceeded"


class ModelNotFound(GatewayError):
    status, code = 404, "model_not_found"


class Unauthorized(GatewayError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(GatewayError):
    status, type, code = 403, "permission_error", "forbidden"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class Overloaded(GatewayError):
    status, type, code = 429, "rate_limit_error", "overloaded"


class EngineUnavailable(GatewayError):
    status, type, code = 503, "service_unavailable", "engine_unavailable"


class AdapterLoadFailed(GatewayError):
    status, type, code = 409, "invalid_request_error", "adapter_load_failed"


class AdapterBroken(GatewayError):
    """A version's files no longer match what was registered; it is not served until rolled back or verified."""

    status, type, code = 503, "service_unavailable", "adapter_broken"
    reason = ""  # what is wrong with the files, without the advice around it


# Library errors from the packages below the server, mapped here and nowhere else.
LIBRARY_ERRORS: list[tuple[type[Exception], int, str, str]] = [
    (AdapterNotFound, 404, "not_found_error", "adapter_not_found"),
    (InvalidAdapter, 400, "invalid_request_error", "invalid_adapter"),
    (InvalidName, 400, "invalid_request_error", "invalid_name"),
    (Conflict, 409, "invalid_request_error", "conflict"),
    (RegistryBusy, 503, "service_unavailable", "registry_busy"),
    (AdapterUnavailable, 503, "service_unavailable", "adapter_unavailable"),  # this replica cannot fetch the files
    (FilesMismatch, 503, "service_unavailable", "adapter_broken"),
    (RegistryError, 400, "invalid_request_error", "registry_error"),
    (RunNotFound, 404, "not_found_error", "run_not_found"),
    (CompletionNotFound, 404, "not_found_error", "completion_not_found"),
    (FeedbackNotFound, 404, "not_found_error", "feedback_not_found"),
    (InvalidFeedback, 400, "invalid_request_error", "invalid_feedback"),
    (StoreUnavailable, 503, "service_unavailable", "feedback_store_unavailable"),
    (FeedbackError, 400, "invalid_request_error", "feedback_error"),
]


ERROR_DESCRIPTIONS = {
    400: "Invalid request: the message and `param` say what to fix.",
    401: "Missing or invalid API key.",
    403: "/admin is disabled (user keys are set but no admin key).",
    404: "The adapter, version, model, completion, feedback or run named does not exist.",
    405: "The path has no such method; `Allow` lists the ones it has.",
    409: "Conflict with the current state (an adapter version that cannot be loaded, an alias that cannot move).",
    413: "An uploaded file is larger than the gateway accepts (FLYWHEEL_MAX_UPLOAD_MIB).",
    429: "Too many requests in flight; retry shortly.",
    503: "The engine, the registry, the adapter store or the feedback store cannot serve right now.",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """The OpenAPI `responses=` entries of the error statuses a route really returns, in OpenAI's error format."""
    return {status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def error_json(status: int, message: str, type_: str, code: str | None, param: str | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def to_response(exc: Exception) -> JSONResponse:
    """Translate any exception into OpenAI's error format with the right HTTP status."""
    if isinstance(exc, GatewayError):
        return error_json(exc.status, str(exc), exc.type, exc.code, exc.param)
    for exc_type, status, type_, code in LIBRARY_ERRORS:
        if isinstance(exc, exc_type):
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)  # KeyError quotes str()
            return error_json(status, message, type_, code)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error_json(400, f"invalid request: {problems}", "invalid_request_error", "invalid_parameter",
                          ".".join(loc) or None)
    if isinstance(exc, StarletteHTTPException):
        # keeps Starlette's headers: a 405 carries `Allow` (RFC 9110), which server/app.py completes
        return error_json(exc.status_code, str(exc.detail), "invalid_request_error", None, headers=exc.headers)
    logger.exception("unexpected error", exc_info=exc)
    return error_json(500, "internal error; see the gateway log", "server_error", "internal_error")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path: Starlette's 405 names only the first route's."""
    routes = [r for r in request.app.router.routes
              if isinstance(r, Route) and r.matches(request.scope)[0] != Match.NONE]
    # the first route's path is the one Starlette matched (`/v1/feedback/pairs`, not `/v1/feedback/{feedback_id}`)
    methods = {m for r in routes if routes and r.path == routes[0].path for m in r.methods or ()}
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through `to_response`."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        response = to_response(exc)
        if response.status_code == 405:
            response.headers["Allow"] = allowed_methods(request)
        return response

    handled = (GatewayError, RegistryError, FeedbackError, RunNotFound, RequestValidationError,
               StarletteHTTPException, Exception)
    for exc_type in handled:
        app.add_exception_handler(exc_type, handle)
