"""Typed feedback errors. The server maps each to an HTTP status in one place; no HTTP here."""

from __future__ import annotations

from flywheel.database_errors import UNREACHABLE, error_name


class FeedbackError(Exception):
    """Base class of everything the feedback package raises on purpose."""


class CompletionNotFound(FeedbackError):
    """The completion id is unknown: never served, served with `store: false`, or expired (HTTP 404)."""


class FeedbackNotFound(FeedbackError):
    """No rating or pair has this id (HTTP 404)."""


class InvalidFeedback(FeedbackError):
    """The submission is malformed; `problems` lists every reason, each saying what to fix (HTTP 400)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("feedback rejected: " + "; ".join(self.problems))


class StoreUnavailable(FeedbackError):
    """The database cannot be written (disk full, read-only, I/O error, locked): nothing was stored (HTTP 503)."""

    # The cause and what an operator should do, by SQLite's primary result code (PostgreSQL's errors are mapped
    # onto them)
    # (https://www.sqlite.org/rescode.html); extended codes such as SQLITE_IOERR_WRITE share their primary's.
    CAUSES = {
        "SQLITE_FULL": ("the disk is full", "free space on the gateway's data volume"),
        "SQLITE_READONLY": ("the database is read-only", "fix the data directory's permissions or remount it"),
        "SQLITE_PERM": ("permission denied", "fix the data directory's permissions"),
        "SQLITE_CANTOPEN": ("the database file cannot be opened", "check that the data directory is writable"),
        "SQLITE_IOERR": ("a disk I/O error", "check the data volume: full, read-only or failing"),
        "SQLITE_BUSY": ("another process holds the database lock", "retry shortly"),
        UNREACHABLE: ("the database server cannot be reached", "check the server FLYWHEEL_DATABASE_URL names"),
    }

    @classmethod
    def from_sqlite(cls, exc: BaseException) -> StoreUnavailable | None:
        """The error to report for an exception that aborted a write; None if it is no storage failure."""
        name = error_name(exc)  # PostgreSQL's errors in SQLite's vocabulary (flywheel/database_errors.py)
        primary = next((key for key in cls.CAUSES if name == key or name.startswith(key + "_")), None)
        if primary is None:
            return None
        cause, action = cls.CAUSES[primary]
        return cls(f"the feedback store cannot write ({cause}), so nothing was stored; {action}, then retry")
