"""Where a store lives: an SQLite file (a `Path`, the embedded default) or a `postgresql://` URL that every
replica shares (`FLYWHEEL_DATABASE_URL`), and how to name it in logs and errors without its password."""

from __future__ import annotations

from pathlib import Path

URL_SCHEMES = ("postgresql://", "postgres://")

Location = Path | str  # an SQLite file, or a postgresql:// URL


def is_url(location: Location) -> bool:
    """True for a PostgreSQL URL, False for an SQLite file path."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def describe(location: Location) -> str:
    """The location for logs and errors, without a password."""
    if not is_url(location):
        return str(location)
    scheme, rest = str(location).split("://", 1)
    if "@" in rest:
        credentials, host = rest.rsplit("@", 1)
        rest = f"{credentials.split(':', 1)[0]}@{host}"
    return f"{scheme}://{rest}"
