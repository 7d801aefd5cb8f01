"""/admin: adapters, versions, aliases, history. Needs the admin key when one is configured."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from server.admin import AdminService
from server.admin_protocol import (
    ALIAS_PATTERN,
    MAX_ID,
    NAME_PATTERN,
    AdapterOut,
    AliasMove,
    AliasSet,
    EventOut,
    RollbackRequest,
    VersionOut,
)
from server.auth import require_admin
from server.errors import PayloadTooLarge, error_responses
from server.state import ResolverDep, StateDep

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)],
                   responses=error_responses(401, 403, 503))
Name = Annotated[str, Path(pattern=NAME_PATTERN, description="An adapter name.")]
Version = Annotated[int, Path(ge=1, le=MAX_ID, description="A version number.")]
Alias = Annotated[str, Path(pattern=ALIAS_PATTERN, max_length=64, description="An alias (not all digits).")]
FOUND = error_responses(400, 404)  # a malformed name or version; an unknown adapter or version
MOVES = error_responses(400, 404, 409)  # and a move the registry refuses (a rejected or broken version)
MIB = 1024 * 1024
FRAMING = MIB  # what an upload's body may carry past its largest file: the config file, the alias, multipart framing


async def get_admin(state: StateDep, resolver: ResolverDep) -> AdminService:
    return AdminService(state.registry, resolver)


AdminDep = Annotated[AdminService, Depends(get_admin)]


def actor_of(request: Request) -> str:
    return request.headers.get("x-flywheel-actor", "admin-api")[:64]


def _adapter(state: StateDep, name: str) -> AdapterOut:
    aliases = {alias: v for (_, alias), v in state.registry.aliases(name).items()}
    by_version: dict[int, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(v, []).append(alias)
    versions = [VersionOut.of(v, by_version.get(v.version)) for v in state.registry.versions(name)]
    return AdapterOut(name=name, aliases=aliases, versions=versions)


@router.get("/adapters")
def list_adapters(state: StateDep) -> list[AdapterOut]:
    return [_adapter(state, name) for name in state.registry.adapters()]


@router.get("/adapters/{name}", responses=FOUND)
def show_adapter(name: Name, state: StateDep) -> AdapterOut:
    return _adapter(state, name)


@router.get("/adapters/{name}/history", responses=FOUND)
def history(name: Name, state: StateDep) -> list[EventOut]:
    state.registry.versions(name)  # 404 for an unknown adapter
    return [EventOut.of(e) for e in state.registry.history(name)]


def too_large(what: str, limit_mib: int, param: str | None = None) -> PayloadTooLarge:
    """The one 413 an upload gets, whether its body or one of its files is past FLYWHEEL_MAX_UPLOAD_MIB."""
    return PayloadTooLarge(f"{what} is larger than {limit_mib} MiB (FLYWHEEL_MAX_UPLOAD_MIB)", param)


async def _read(upload: UploadFile, limit_mib: int) -> bytes:
    """An uploaded file's bytes; PayloadTooLarge past the limit (never cut short: a truncated file read as a 400)."""
    data = await upload.read(limit_mib * MIB + 1)
    if len(data) > limit_mib * MIB:
        raise too_large(upload.filename or "the file", limit_mib, upload.filename)
    return data


class _CountedReceive:
    """`receive` that raises once the body passes `ceiling` bytes: a chunked body declares no length to check."""

    def __init__(self, receive: Receive, ceiling: int, limit_mib: int):
        self.receive, self.ceiling, self.limit_mib = receive, ceiling, limit_mib
        self.received = 0

    @property
    def exceeded(self) -> bool:
        return self.received > self.ceiling

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.exceeded:
                raise too_large("the upload", self.limit_mib)  # Starlette's parser stops and deletes its spooled files
        return message


class UploadRoute(APIRoute):
    """A multipart route whose body past the limit is refused before Starlette spools it to disk.

    FastAPI parses a form before it runs any dependency, so the admin key and the size are checked here,
    first: a Content-Length past the limit is answered without reading the body, and a chunked body is
    read only up to it.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            await require_admin(request)  # an unauthenticated upload is refused before its body is read, too
            limit_mib = request.app.state.flywheel.settings.max_upload_mib
            ceiling = limit_mib * MIB + FRAMING
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > ceiling:
                raise too_large("the upload", limit_mib)
            receive = _CountedReceive(request.receive, ceiling, limit_mib)
            try:
                return await handler(Request(request.scope, receive))
            except HTTPException:
                if receive.exceeded:  # FastAPI answers any error raised while it reads a form with a 400
                    raise too_large("the upload", limit_mib) from None
                raise

        return limited


async def register(
    name: Name, admin: AdminDep, state: StateDep, request: Request,
    adapter_config: Annotated[UploadFile, File(description="adapter_config.json")],
    adapter_model: Annotated[UploadFile, File(description="adapter_model.safetensors")],
    alias: Annotated[str | None, Form()] = None,
) -> VersionOut:
    config = await _read(adapter_config, state.settings.max_upload_mib)
    weights = await _read(adapter_model, state.settings.max_upload_mib)
    return VersionOut.of(await admin.register_upload(name, config, weights, alias, actor_of(request)))


router.add_api_route("/adapters/{name}/versions", register, methods=["POST"], status_code=201,
                     responses={**MOVES, **error_responses(413)}, route_class_override=UploadRoute)


@router.post("/adapters/{name}/versions/{version}/verify", responses=FOUND)
async def verify(name: Name, version: Version, admin: AdminDep, request: Request) -> VersionOut:
    """Check a version's files against the registration: marks it broken, or ready again once restored."""
    return VersionOut.of(await admin.verify(name, version, actor_of(request)))


@router.post("/adapters/{name}/promote", responses=MOVES)
async def promote(name: Name, body: AliasMove, admin: AdminDep, request: Request) -> EventOut:
    return EventOut.of(await admin.promote(name, body.version, actor_of(request), body.reason))


@router.post("/adapters/{name}/rollback", responses=MOVES)
async def rollback(name: Name, body: RollbackRequest, admin: AdminDep, request: Request) -> EventOut:
    return EventOut.of(await admin.rollback(name, body.to, body.alias, actor_of(request), body.reason))


@router.put("/adapters/{name}/aliases/{alias}", responses=MOVES)
async def set_alias(name: Name, alias: Alias, body: AliasSet, admin: AdminDep, request: Request) -> EventOut:
    return EventOut.of(await admin.set_alias(name, alias, body.version, actor_of(request), body.reason))
