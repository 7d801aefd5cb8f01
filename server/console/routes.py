"""/console: the operator console's pages and actions (server-rendered, a small script, no build step)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from adapters.names import CANDIDATE, PRODUCTION
from server.console import session
from server.console.actions import ConsoleActions
from server.console.pages import ConsoleRoute, done, render
from server.console.views import ConsoleViews
from server.errors import BadRequest, ModelNotFound
from server.state import GatewayState, StateDep

logger = logging.getLogger(__name__)

public = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)
guarded = APIRouter(prefix="/console", dependencies=[Depends(session.require_console)], route_class=ConsoleRoute,
                    include_in_schema=False)
STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
PageNo = Annotated[int, Query(ge=1, le=100_000)]
Text = Annotated[str, Form(max_length=1000)]


def _version(text: str, what: str = "version") -> int | None:
    """A form's version field: empty means none; anything but a positive number is refused by name."""
    text = text.strip().lstrip("v")
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise BadRequest(f"{what} must be a version number such as 3, not {text!r}", what)
    return int(text)


def _confirmed(csrf: str, confirm: str, reason: str, request: Request) -> str:
    session.check_csrf(request, csrf)
    if confirm != "yes":
        raise BadRequest("tick the confirmation box to apply this action", "confirm")
    if not reason.strip():
        raise BadRequest("give a reason: it goes into the audit log", "reason")
    return reason.strip()


@public.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise ModelNotFound(f"no console file {name!r}")
    return FileResponse(Path(__file__).parent / "static" / name, media_type=STATIC[name])


@public.get("/login")
def login_form(request: Request) -> Response:
    return render(request, "login.html")


@public.post("/login")
def login(request: Request, state: StateDep, key: Annotated[str, Form(max_length=1000)] = "",
          name: Annotated[str, Form(max_length=1000)] = "") -> Response:
    session.check_key(state.settings, key or None)
    name = name.strip()
    if problem := session.operator_problem(name):
        return render(request, "login.html", {"error": problem}, 400)
    response = RedirectResponse("/console", status_code=303)
    session.log_in(request, response, key, name)
    return response


@guarded.post("/logout")
def logout(request: Request, csrf: Text = "") -> Response:
    session.check_csrf(request, csrf)
    response = render(request, "login.html", {"info": "logged out"})
    session.log_out(response)
    return response


@guarded.get("")
def adapters(request: Request, state: StateDep, q: str = "", page: PageNo = 1) -> Response:
    return render(request, "adapters.html", {"page": ConsoleViews(state).adapters(q, page), "q": q, "page_no": page})


@guarded.get("/adapters/{name}")
def adapter(name: str, request: Request, state: StateDep, page: PageNo = 1) -> Response:
    return render(request, "adapter.html", {**ConsoleViews(state).adapter(name, page), "page_no": page})


@guarded.get("/adapters/{name}/history")
def history(name: str, request: Request, state: StateDep, page: PageNo = 1) -> Response:
    return render(request, "history.html", {"page": ConsoleViews(state).history(name, page), "name": name,
                                            "page_no": page})


@guarded.get("/adapters/{name}/versions/{version}")
def version(name: str, version: int, request: Request, state: StateDep, unit: str = "hour",
            page: PageNo = 1) -> Response:
    unit = unit if unit in ("hour", "day") else "hour"
    view = ConsoleViews(state).version(name, version, unit, page)
    return render(request, "version.html", {**view, "name": name, "unit": unit, "page_no": page})


@guarded.get("/runs")
def runs(request: Request, state: StateDep, adapter: str = "", page: PageNo = 1) -> Response:
    return render(request, "runs.html", {"page": ConsoleViews(state).runs(adapter, page), "adapter": adapter,
                                         "page_no": page})


@guarded.get("/runs/{run_id}")
def run(run_id: int, request: Request, state: StateDep) -> Response:
    return render(request, "run.html", ConsoleViews(state).run(run_id))


@guarded.get("/feedback")
def feedback(request: Request, state: StateDep, adapter: str, version: str = "", page: PageNo = 1) -> Response:
    number = _version(version)
    view = ConsoleViews(state).feedback(adapter, number, page)
    return render(request, "feedback.html", {"page": view, "adapter": adapter, "version": number, "page_no": page})


def _seen(text: str, alias: str) -> int | None:
    """The version `alias` had on the page the form came from (`seen` lists them as `alias=version,...`)."""
    pairs = dict(item.partition("=")[::2] for item in text.split(",") if "=" in item)
    return _version(pairs.get(alias.strip(), ""), "seen")


def _actions(request: Request, state: GatewayState) -> ConsoleActions:
    """The actions, recorded in the audit log as the operator logged in (`console:<name>`)."""
    return ConsoleActions(state, session.actor(request))


@guarded.post("/adapters/{name}/promote")
async def promote(name: str, request: Request, state: StateDep, version: Text = "", reason: Text = "",
                  seen: Text = "", confirm: Text = "", csrf: Text = "") -> Response:
    reason = _confirmed(csrf, confirm, reason, request)
    text = await _actions(request, state).promote(name, _version(version), reason, _seen(seen, PRODUCTION),
                                                  _seen(seen, CANDIDATE))  # an empty version: the candidate shown
    return done(request, "ok", text)


@guarded.post("/adapters/{name}/rollback")
async def rollback(name: str, request: Request, state: StateDep, alias: Text = PRODUCTION.value, to: Text = "",
                   reason: Text = "", seen: Text = "", confirm: Text = "", csrf: Text = "") -> Response:
    reason = _confirmed(csrf, confirm, reason, request)
    text = await _actions(request, state).rollback(name, alias.strip(), _version(to, "to"), reason, _seen(seen, alias))
    return done(request, "ok", text)


@guarded.post("/adapters/{name}/alias")
async def move_alias(name: str, request: Request, state: StateDep, alias: Text = "", version: Text = "",
                     reason: Text = "", seen: Text = "", confirm: Text = "", csrf: Text = "") -> Response:
    reason = _confirmed(csrf, confirm, reason, request)
    text = await _actions(request, state).set_alias(name, alias.strip(), _version(version), reason, _seen(seen, alias))
    return done(request, "ok", text)


@guarded.post("/adapters/{name}/train")
async def train(name: str, request: Request, state: StateDep, reason: Text = "", confirm: Text = "",
                csrf: Text = "") -> Response:
    reason = _confirmed(csrf, confirm, reason, request)
    text = await _actions(request, state).queue_run(name, reason)
    logger.info("console queued a training run for %s: %s", name, reason)
    return done(request, "ok", text)


router = APIRouter()  # what server/app.py includes
router.include_router(public)
router.include_router(guarded)
