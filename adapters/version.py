"""The registry's records: one immutable adapter version, and one recorded alias move."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from adapters.names import Word


class VersionStatus(Word):
    """Whether a registered version may serve."""

    READY = "ready"
    REJECTED = "rejected"  # by the evaluation gate: registered for the record, never aliased
    BROKEN = "broken"  # its files no longer match the manifest recorded at registration


def version_dir(adapter: str, version: int) -> Path:
    """Where a version's files live under whichever root holds them (`<name>/v<N>`; the row's `path`)."""
    return Path(adapter) / f"v{version}"


@dataclass(frozen=True)
class AdapterVersion:
    """One immutable registered version."""

    id: int
    adapter: str
    version: int
    path: Path
    sha256: str
    rank: int
    alpha: float
    target_modules: list[str]
    base_fingerprint: str
    created_at: float
    source: str
    parent_version: int | None
    metrics: dict = field(default_factory=dict)
    status: str = VersionStatus.READY
    created_by: str = ""
    files: dict = field(default_factory=dict)  # file name -> {"sha256", "size"} as registered
    status_reason: str = ""  # why a version is broken (empty while it is ready)

    @property
    def lora_name(self) -> str:
        """The name this version has inside vLLM; unique per version, never reused (invariant 5)."""
        return f"{self.adapter}@{self.version}"

    @classmethod
    def from_row(cls, row: dict, root: Path) -> AdapterVersion:
        return cls(
            id=row["id"],
            adapter=row["adapter"],
            version=row["version"],
            path=root / row["path"],
            sha256=row["sha256"],
            rank=row["rank"],
            alpha=row["alpha"],
            target_modules=json.loads(row["target_modules"]),
            base_fingerprint=row["base_fingerprint"],
            created_at=row["created_at"],
            source=row["source"],
            parent_version=row["parent_version"],
            metrics=json.loads(row["metrics"]),
            status=row["status"],
            created_by=row["created_by"],
            files=json.loads(row.get("files") or "{}"),
            status_reason=row.get("status_reason") or "",
        )


@dataclass(frozen=True)
class AliasEvent:
    """One recorded alias move: who, when, from, to, why."""

    id: int
    adapter: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: float


@dataclass(frozen=True)
class StatusEvent:
    """One recorded status change of a version (ready -> broken and back): who, when, why."""

    id: int
    adapter: str
    version: int
    from_status: str
    to_status: str
    actor: str
    reason: str
    at: float
