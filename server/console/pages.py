"""Rendering console pages, and the one place where an error becomes a page instead of JSON.

Console routes use `ConsoleRoute`: a request without the admin key gets the login form, a library or
gateway error on a page gets an error page with the status the API would give, and an error from an
action comes back as a flash message on the page the form was on. Never a 500 for a bad input.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from adapters.errors import RegistryError
from adapters.runs import RunNotFound
from feedback.errors import FeedbackError
from server.console import session
from server.errors import GatewayError, to_response

logger = logging.getLogger(__name__)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")  # autoescapes .html
templates.env.filters["when"] = lambda at: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else ""
templates.env.filters["num"] = lambda v: f"{v:.4g}" if isinstance(v, float) else v

EXPECTED = (RegistryError, GatewayError, RunNotFound, FeedbackError, RequestValidationError)


def render(request: Request, name: str, context: dict | None = None, status: int = 200) -> Response:
    """A page with the shared context (CSRF token, flash message) and cookies set."""
    context = {"csrf": session.csrf_token(request), "flash": session.take_flash(request),
               "operator": session.operator(request), **(context or {})}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    return session.finish(request, response)


def back_to(request: Request) -> str:
    """Where an action's result is shown: the adapter's page, or the console's front page."""
    name = request.path_params.get("name")
    return f"/console/adapters/{name}" if name else "/console"


def done(request: Request, kind: str, text: str, url: str | None = None) -> Response:
    """The answer to an action: back to its page (303), with the result as a flash message."""
    response = RedirectResponse(url or back_to(request), status_code=303)
    session.flash(response, kind, text)
    return response


def _message(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ())[1:])}: {e.get('msg')}" for e in exc.errors())
        return 400, f"invalid input: {problems}"
    response = to_response(exc)  # the API's status and message for the same error
    return response.status_code, json.loads(response.body)["error"]["message"]


class ConsoleRoute(APIRoute):
    """An APIRoute whose errors render as console pages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except session.NeedsLogin as e:
                return render(request, "login.html", {"error": e.message}, 401)
            except session.ConsoleDisabled as e:
                return render(request, "error.html", {"message": str(e)}, 403)
            except session.BadCsrf as e:
                return render(request, "error.html", {"message": str(e)}, 403)
            except EXPECTED as e:
                status, message = _message(e)
                if request.method == "POST":
                    logger.info("console action refused: %s", message)
                    return done(request, "error", message)
                return render(request, "error.html", {"message": message}, status)

        return guarded

