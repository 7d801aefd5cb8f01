"""Adapter references: `name`, `name@7` (a version) or `name@canary` (an alias).

Names are validated identifiers, never paths (invariant 6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from adapters.errors import InvalidName

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class Word(StrEnum):
    """One word of a vocabulary: a `str` everywhere (SQL parameters, JSON, dict keys, `==` with a row's value),
    and in `repr` too, since messages quote values with `!r`."""

    def __repr__(self) -> str:
        return repr(self.value)


class Alias(Word):
    """The aliases Flywheel itself gives a meaning to (operators may add custom ones)."""

    PRODUCTION = "production"  # what a bare adapter name serves
    CANDIDATE = "candidate"  # the trainer's newest version that passed the gate
    CANARY = "canary"  # while set, the gateway sends a share of the production traffic here


PRODUCTION, CANDIDATE, CANARY = Alias.PRODUCTION, Alias.CANDIDATE, Alias.CANARY


def check_name(name: str, what: str = "adapter name") -> str:
    """Return `name` if it is a valid identifier, else raise InvalidName saying what is allowed."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidName(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def check_alias(alias: str) -> str:
    """Aliases follow adapter-name rules and may not be all digits (that would read as a version)."""
    check_name(alias, "alias")
    if alias.isdigit():
        raise InvalidName(f"invalid alias {alias!r}: an alias cannot be a number (numbers name versions)")
    return alias


@dataclass(frozen=True)
class AdapterRef:
    """A parsed reference: exactly one of `version` / `alias` is set."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> AdapterRef:
        """Parse `name`, `name@<version>` or `name@<alias>`; a bare name means the production alias."""
        name, sep, tail = text.partition("@")
        check_name(name)
        if not sep:
            return cls(name, alias=PRODUCTION)
        if tail.isdigit():
            return cls(name, version=int(tail))
        return cls(name, alias=check_alias(tail))

    def __str__(self) -> str:
        return f"{self.name}@{self.version if self.version is not None else self.alias}"
