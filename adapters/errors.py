"""Typed registry errors. The server maps each to an HTTP status in one place."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of everything the registry raises on purpose."""


class AdapterNotFound(RegistryError):
    """The adapter, version or alias does not exist (HTTP 404)."""


class InvalidAdapter(RegistryError):
    """An adapter folder failed validation; `problems` lists every reason at once (HTTP 400)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("adapter rejected: " + "; ".join(problems))


class InvalidName(RegistryError):
    """An adapter, alias or reference is not a valid identifier (HTTP 400)."""


class Conflict(RegistryError):
    """The move cannot be made in the registry's current state (HTTP 409)."""


class AliasMoved(Conflict):
    """An alias move that named where the alias should be found, and found it elsewhere (HTTP 409)."""

    def __init__(self, adapter: str, alias: str, expected: int | None, current: int | None):
        self.adapter, self.alias, self.expected, self.current = adapter, alias, expected, current
        super().__init__(f"{adapter}: {alias} is at {version_text(current)}, not at {version_text(expected)} as"
                         " expected (it moved meanwhile); nothing was changed")


def version_text(version: int | None) -> str:
    """`v7`, or `nothing` for an alias that is not set."""
    return f"v{version}" if version is not None else "nothing"


class RegistryBusy(RegistryError):
    """Another process holds the registry database's lock past the busy timeout; nothing was changed (HTTP 503)."""


class AdapterUnavailable(RegistryError):
    """A version's files cannot be fetched to this host now (object store unreachable, object missing): this
    replica answers 503 and retries at the next request; nothing is written to the registry."""


class FilesMismatch(RegistryError):
    """A version's stored files are there and differ from its manifest: the version is broken (HTTP 503
    `adapter_broken` once the resolver has marked it); `problems` lists every difference."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))
