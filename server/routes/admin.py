"""/admin: adapters, versions, aliases, history. Needs the admin key when one is configured."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from server.admin import AdminService
from server.admin_protocol import AdapterOut, AliasMove, EventOut, RollbackRequest, VersionOut
from server.auth import require_admin
from server.errors import BadRequest
from server.state import ResolverDep, StateDep

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])
MAX_UPLOAD = 512 * 1024 * 1024


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


@router.get("/adapters/{name}")
def show_adapter(name: str, state: StateDep) -> AdapterOut:
    return _adapter(state, name)


@router.get("/adapters/{name}/history")
def history(name: str, state: StateDep) -> list[EventOut]:
    state.registry.versions(name)  # 404 for an unknown adapter
    return [EventOut.of(e) for e in state.registry.history(name)]


@router.post("/adapters/{name}/versions", status_code=201)
async def register(
    name: str, admin: AdminDep, request: Request,
    adapter_config: Annotated[UploadFile, File(description="adapter_config.json")],
    adapter_model: Annotated[UploadFile, File(description="adapter_model.safetensors")],
    alias: Annotated[str | None, Form()] = None,
) -> VersionOut:
    config = await adapter_config.read(MAX_UPLOAD)
    weights = await adapter_model.read(MAX_UPLOAD)
    return VersionOut.of(await admin.register_upload(name, config, weights, alias, actor_of(request)))


@router.post("/adapters/{name}/versions/{version}/verify")
async def verify(name: str, version: int, admin: AdminDep, request: Request) -> VersionOut:
    """Check a version's files against the registration: marks it broken, or ready again once restored."""
    return VersionOut.of(await admin.verify(name, version, actor_of(request)))


@router.post("/adapters/{name}/promote")
async def promote(name: str, body: AliasMove, admin: AdminDep, request: Request) -> EventOut:
    return EventOut.of(await admin.promote(name, body.version, actor_of(request), body.reason))


@router.post("/adapters/{name}/rollback")
async def rollback(name: str, body: RollbackRequest, admin: AdminDep, request: Request) -> EventOut:
    return EventOut.of(await admin.rollback(name, body.to, body.alias, actor_of(request), body.reason))


@router.put("/adapters/{name}/aliases/{alias}")
async def set_alias(name: str, alias: str, body: AliasMove, admin: AdminDep, request: Request) -> EventOut:
    if body.version is None:
        raise BadRequest("name the version the alias should point to", "version")
    return EventOut.of(await admin.set_alias(name, alias, body.version, actor_of(request), body.reason))
