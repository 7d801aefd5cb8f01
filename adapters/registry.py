"""The adapter registry: immutable versions, movable aliases, and an audit log of every move.

Storage is one SQLite file (WAL mode) or a PostgreSQL database that every replica shares
(flywheel/database.py). Several processes (gateways, CLI, trainer) share it; every alias move is one
write transaction that holds the registry's write lock (`BEGIN IMMEDIATE`, or PostgreSQL's advisory
lock), so moves never interleave. A process that holds the write lock too long makes the others'
writes fail after `busy_timeout` with `RegistryBusy` instead of hanging; readers are not blocked by a
writer, and reads use connections of their own so that they never queue behind this process's own
waiting write either.

A version is `ready`, `rejected` (by the evaluation gate) or `broken` (its files no longer match the
manifest recorded at registration, adapters/integrity.py). Status changes are recorded in
`status_events` and move the change token, so every gateway following the registry sees them.

A new version's files are copied into a staging folder named after this process and published inside the
write transaction, before its row commits (adapters/files.py: renamed into the shared folder, or uploaded to
the object store). A process killed before that leaves the staging folder; the registry deletes those of dead
processes on this host when it opens (flywheel/scratch.py).

The reads (versions, aliases, history, resolving a reference) are `RegistryReader`'s
(adapters/registry_reader.py), which `Registry` extends with every write.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from adapters.base_model import BaseModelInfo
from adapters.errors import AdapterNotFound, AliasMoved, Conflict, InvalidAdapter
from adapters.files import AdapterFiles, SharedFolder
from adapters.integrity import manifest_of
from adapters.names import CANDIDATE, PRODUCTION, check_alias, check_name
from adapters.registry_reader import RegistryReader
from adapters.schema import create_tables
from adapters.validation import validate_adapter
from adapters.version import AdapterVersion, AliasEvent, VersionStatus, version_dir
from flywheel.connection import Connection
from flywheel.database import Database
from flywheel.location import Location
from flywheel.scratch import clear_dead, owned_name

logger = logging.getLogger(__name__)

REGISTERED_STATUSES = (VersionStatus.READY, VersionStatus.REJECTED)  # what a new version can start as
BUSY_TIMEOUT_S = 5.0  # alias moves take milliseconds: a lock held this long is stuck, so answer rather than hang
STAGING = ".staging-"  # adapters_dir/.staging-<uuid>-<host>-<pid>: a registration's copy before its rename


class _Anywhere(Enum):
    ANYWHERE = "anywhere"


ANYWHERE = _Anywhere.ANYWHERE  # an alias move's default `expected`: move it from wherever it is now
Expected = int | None | _Anywhere  # the version the mover saw the alias at (None: unset), or ANYWHERE


def _locked(method: Callable) -> Callable:
    """Serialise use of the writing connection across threads (gateway threads, admin uploads)."""

    @functools.wraps(method)
    def wrapper(self: Registry, *args, **kwargs):
        with self._lock, self._busy_is_typed():
            return method(self, *args, **kwargs)

    return wrapper


class Registry(RegistryReader):
    """Versions, aliases and their history for every adapter of one base model: the reads of
    `RegistryReader`, and every write (register, alias moves, metrics, status)."""

    def __init__(self, db_path: Location, adapters_dir: Path, base: BaseModelInfo | None, max_rank: int = 64,
                 busy_timeout: float = BUSY_TIMEOUT_S, files: AdapterFiles | None = None):
        """`db_path`: the registry's SQLite file, or a postgresql:// URL shared by every replica. `files`: where
        versions' files are published and read (default: the shared folder `adapters_dir`)."""
        adapters_dir = Path(adapters_dir)
        adapters_dir.mkdir(parents=True, exist_ok=True)
        clear_dead(adapters_dir, STAGING)  # copies of registrations killed before their rename
        self.files = files or SharedFolder(adapters_dir)
        super().__init__(Database(db_path, lock_name="registry", busy_timeout=busy_timeout), adapters_dir,
                         self.files.root)
        self.base = base
        self.max_rank = max_rank
        self._lock = threading.RLock()
        with self._busy_is_typed():
            create_tables(self.db)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction that takes the registry's write lock up front (no upgrade deadlocks)."""
        with self._lock, self._busy_is_typed(), self.db.write() as conn:
            yield conn

    def register(
        self,
        adapter: str,
        source_dir: Path,
        *,
        source: str = "uploaded",
        parent_version: int | None = None,
        metrics: dict | None = None,
        status: str = VersionStatus.READY,
        actor: str = "cli",
        alias: str | None = None,
    ) -> AdapterVersion:
        """Validate `source_dir`, copy it atomically, and record it as the adapter's next version.

        Nothing is written when validation fails, nor when publishing the files does (AdapterUnavailable).
        With `alias`, that alias moves to the new version in the same transaction.
        """
        check_name(adapter)
        if status not in REGISTERED_STATUSES:
            raise InvalidAdapter([f"status must be one of {REGISTERED_STATUSES}, not {status!r}"])
        if self.base is None:
            raise InvalidAdapter(["the base model is not available; run `flywheel model prepare` first"])
        checked = validate_adapter(Path(source_dir), self.base, self.max_rank)
        staging = self.adapters_dir / owned_name(STAGING, uuid.uuid4().hex)
        shutil.copytree(source_dir, staging)
        try:
            files = manifest_of(staging)  # of the copy: what serving will read
            with self._write() as conn:
                (last,) = conn.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM versions WHERE adapter = ?", [adapter]
                ).fetchone()
                version = last + 1
                rel = version_dir(adapter, version)
                self.files.publish(staging, rel)  # before the row: a committed row always has its files
                conn.execute(
                    "INSERT INTO versions (adapter, version, path, sha256, rank, alpha, target_modules,"
                    " base_fingerprint, created_at, source, parent_version, metrics, status, created_by, files)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [adapter, version, str(rel), checked.sha256, checked.rank, checked.alpha,
                     json.dumps(checked.target_modules), self.base.fingerprint, time.time(), source,
                     parent_version, json.dumps(metrics or {}), status, actor, json.dumps(files)],
                )
                if alias:
                    self._move(conn, adapter, check_alias(alias), version, actor, f"registered v{version}")
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("registered %s@%d (rank %d, %s)", adapter, version, checked.rank, source)
        return self.get_version(adapter, version)

    @_locked
    def set_metrics(self, adapter: str, version: int, metrics: dict) -> None:
        """Merge evaluation numbers into a version's metrics (the weights stay immutable)."""
        with self._write() as conn:  # read and merged inside the write: another replica's merge is never lost
            row = conn.execute("SELECT metrics FROM versions WHERE adapter = ? AND version = ?",
                               [adapter, version]).fetchone()
            if row is None:
                self._not_found(adapter, version)
            conn.execute(
                "UPDATE versions SET metrics = ? WHERE adapter = ? AND version = ?",
                [json.dumps({**json.loads(row[0]), **metrics}), adapter, version],
            )

    @staticmethod
    def _expect(conn: Connection, adapter: str, alias: str, expected: Expected) -> int | None:
        """Where `alias` is now, read on the write connection; AliasMoved when that is not `expected`."""
        row = conn.execute("SELECT version FROM aliases WHERE adapter = ? AND alias = ?", [adapter, alias]).fetchone()
        now = row[0] if row else None
        if expected is not ANYWHERE and now != expected:
            raise AliasMoved(adapter, alias, expected, now)
        return now

    def _move(
        self, conn: Connection, adapter: str, alias: str, version: int | None, actor: str, reason: str,
        expected: Expected = ANYWHERE,
    ) -> int | None:
        before = self._expect(conn, adapter, alias, expected)
        if version is None:
            conn.execute("DELETE FROM aliases WHERE adapter = ? AND alias = ?", [adapter, alias])
        else:
            conn.execute(
                "INSERT INTO aliases (adapter, alias, version, updated_at) VALUES (?,?,?,?)"
                " ON CONFLICT (adapter, alias) DO UPDATE SET version = excluded.version,"
                " updated_at = excluded.updated_at",
                [adapter, alias, version, time.time()],
            )
        conn.execute(
            "INSERT INTO alias_events (adapter, alias, from_version, to_version, actor, reason, at)"
            " VALUES (?,?,?,?,?,?,?)",
            [adapter, alias, before, version, actor, reason, time.time()],
        )
        return before

    def _check_servable(self, conn: Connection, adapter: str, version: int) -> None:
        """Conflict unless `version` is ready, read on the write connection: a replica marking it broken a
        moment ago is seen here."""
        row = conn.execute("SELECT status, status_reason FROM versions WHERE adapter = ? AND version = ?",
                           [adapter, version]).fetchone()
        if row is None:
            self._not_found(adapter, version)
        status, status_reason = row
        if status != VersionStatus.READY:
            why = f" ({status_reason})" if status_reason else ""
            raise Conflict(f"{adapter}@{version} is {status}{why}; only ready versions can be aliased")

    @_locked
    def set_alias(
        self, adapter: str, alias: str, version: int, *, actor: str = "cli", reason: str = "",
        expected: Expected = ANYWHERE,
    ) -> AliasEvent:
        """Point `alias` at `version` atomically and record the move. Rejected and broken versions cannot serve.

        With `expected` (the version the caller saw the alias at, None for unset), the move is refused with
        AliasMoved when the alias is elsewhere by then: both checks run inside the write transaction.
        """
        return self._set_alias(adapter, alias, version, actor, reason or f"set {alias}", expected)

    def _set_alias(self, adapter: str, alias: str, version: int, actor: str, reason: str, expected: Expected,
                   others: dict[str, Expected] | None = None) -> AliasEvent:
        """set_alias's move; `others`: more aliases that must be where the caller saw them, checked in its write."""
        check_name(adapter)
        check_alias(alias)
        with self._write() as conn:
            for other, where in (others or {}).items():
                self._expect(conn, adapter, other, where)
            self._check_servable(conn, adapter, version)
            before = self._move(conn, adapter, alias, version, actor, reason, expected)
        logger.info("%s: %s moved %s -> %s by %s (%s)", adapter, alias, before, version, actor, reason)
        return self.history(adapter, alias)[-1]

    @_locked
    def promote_target(self, adapter: str) -> int:
        """The version a bare promote moves to production: the current candidate."""
        version = self.alias_version(check_name(adapter), CANDIDATE)
        if version is None:
            self._require_registered(adapter)
            raise Conflict(f"adapter {adapter!r} has no candidate to promote; name a version")
        return version

    @_locked
    def rollback_target(self, adapter: str, alias: str = PRODUCTION) -> int:
        """The version `alias` held before its last move."""
        events = self.history(adapter, alias)
        if not events or events[-1].from_version is None:
            self._require_registered(adapter)
            raise Conflict(f"{adapter}: {alias} has no earlier version to roll back to; name one with --to N")
        return events[-1].from_version

    @_locked
    def promote(self, adapter: str, version: int | None = None, *, actor: str = "cli", reason: str = "",
                expected: Expected = ANYWHERE, expected_candidate: Expected = ANYWHERE) -> AliasEvent:
        """Make `version` (default: the current candidate) the production version.

        `expected` and `expected_candidate` are where the caller saw production and the candidate (None: unset):
        either found elsewhere refuses the move with AliasMoved, both read inside its write transaction, so
        promoting the candidate a page showed never promotes one another replica put there meanwhile.
        """
        version = self.promote_target(adapter) if version is None else version
        return self._set_alias(adapter, PRODUCTION, version, actor, reason or "promote", expected,
                               {CANDIDATE: expected_candidate})

    @_locked
    def rollback(
        self, adapter: str, to: int | None = None, *, alias: str = PRODUCTION, actor: str = "cli", reason: str = "",
        expected: Expected = ANYWHERE,
    ) -> AliasEvent:
        """Return `alias` to the version it held before its last move, or to version `to`."""
        to = self.rollback_target(adapter, alias) if to is None else to
        return self.set_alias(adapter, alias, to, actor=actor, reason=reason or f"rollback to v{to}", expected=expected)

    @_locked
    def remove_alias(self, adapter: str, alias: str, *, actor: str = "cli", reason: str = "",
                     expected: Expected = ANYWHERE) -> None:
        """Delete a custom alias (recorded like any move); with `expected`, only from that version (AliasMoved)."""
        check_alias(alias)
        with self._write() as conn:  # checked inside the write: a replica removing it too records one removal
            present = conn.execute("SELECT 1 FROM aliases WHERE adapter = ? AND alias = ?", [adapter, alias]).fetchone()
            if present is None and expected is ANYWHERE:
                raise AdapterNotFound(f"adapter {adapter!r} has no alias {alias!r}")
            if present is None and expected is None:
                return  # already gone, as the caller expected
            self._move(conn, adapter, alias, None, actor, reason or f"remove {alias}", expected)

    # ---- status: broken files -----------------------------------------------------------------
    def mark_broken(self, adapter: str, version: int, reason: str, *, actor: str = "gateway") -> bool:
        """Record that `version`'s files are broken, with why; False when it already was (nothing written).

        The change token moves, so every gateway stops serving it. Rejected versions keep their status.
        """
        return self._set_status(adapter, version, VersionStatus.BROKEN, reason, actor)

    def mark_ready(self, adapter: str, version: int, *, actor: str = "cli", reason: str = "files verified") -> bool:
        """Return a broken version to ready once its files check out again; False when it was not broken."""
        return self._set_status(adapter, version, VersionStatus.READY, reason, actor)

    def _set_status(self, adapter: str, version: int, status: str, reason: str, actor: str) -> bool:
        before = VersionStatus.BROKEN if status == VersionStatus.READY else VersionStatus.READY
        if self.get_version(adapter, version).status != before:  # a cheap read first: repeats write nothing
            return False
        with self._write() as conn:
            row = conn.execute("SELECT status FROM versions WHERE adapter = ? AND version = ?",
                               [adapter, version]).fetchone()
            if row[0] != before:
                return False
            conn.execute("UPDATE versions SET status = ?, status_reason = ? WHERE adapter = ? AND version = ?",
                         [status, reason if status == VersionStatus.BROKEN else "", adapter, version])
            conn.execute(
                "INSERT INTO status_events (adapter, version, from_status, to_status, actor, reason, at)"
                " VALUES (?,?,?,?,?,?,?)", [adapter, version, before, status, actor, reason, time.time()],
            )
        log = logger.warning if status == VersionStatus.BROKEN else logger.info
        log("%s@%d is now %s (by %s): %s", adapter, version, status, actor, reason)
        return True
