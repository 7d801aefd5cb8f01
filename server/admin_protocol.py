"""Wire types of the /admin API."""

from __future__ import annotations

from dataclasses import asdict

from pydantic import BaseModel, ConfigDict, Field

from adapters.names import NAME_RE, PRODUCTION
from adapters.version import AdapterVersion, AliasEvent

NAME_PATTERN = NAME_RE.pattern
# adapters/names.py's check_alias: a name that is not all digits (digits name versions)
# Ids and versions are SQLite integers (at most 2**63 - 1); JSON Schema validators compare numbers as doubles,
# so the documented bound is one they represent exactly.
MAX_ID = 2**53
ALIAS_PATTERN = r"^([A-Za-z]|[0-9][A-Za-z0-9_-]*[A-Za-z_-])[A-Za-z0-9_-]*$"


class AliasMove(BaseModel):
    """Body of promote / rollback / alias moves."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, le=MAX_ID, description="Target version; promote defaults to the candidate.")
    reason: str = Field("", max_length=1000)


class AliasSet(BaseModel):
    """Body of PUT /admin/adapters/{name}/aliases/{alias}."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_ID, description="The version the alias should point to.")
    reason: str = Field("", max_length=1000)


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: int | None = Field(None, ge=1, le=MAX_ID, description="Version to return to; default: the one held before.")
    alias: str = Field(PRODUCTION.value, pattern=ALIAS_PATTERN, max_length=64)
    reason: str = Field("", max_length=1000)


class VersionOut(BaseModel):
    adapter: str
    version: int
    sha256: str
    rank: int
    alpha: float
    target_modules: list[str]
    base_fingerprint: str
    created_at: float
    source: str
    parent_version: int | None
    metrics: dict
    status: str = Field(description="ready, rejected (by the evaluation gate) or broken (files changed on disk).")
    status_reason: str = Field("", description="What is wrong with a broken version's files.")
    created_by: str
    aliases: list[str] = []

    @classmethod
    def of(cls, v: AdapterVersion, aliases: list[str] | None = None) -> VersionOut:
        # the id and on-disk path stay internal: requests and responses never carry paths
        return cls.model_validate({**asdict(v), "aliases": aliases or []})


class AdapterOut(BaseModel):
    name: str
    aliases: dict[str, int]
    versions: list[VersionOut]


class EventOut(BaseModel):
    adapter: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: float

    @classmethod
    def of(cls, e: AliasEvent) -> EventOut:
        return cls(adapter=e.adapter, alias=e.alias, from_version=e.from_version, to_version=e.to_version,
                   actor=e.actor, reason=e.reason, at=e.at)
