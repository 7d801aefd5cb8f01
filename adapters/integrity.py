"""Is a registered version's folder still what was registered? Checks its files against the manifest.

At registration the registry records the size and sha256 of each file vLLM reads (the config and the
weights). A folder deleted, a file removed, truncated, rewritten or unreadable later makes the version
broken: `verify` says what is wrong, in words an operator can act on (no file paths: clients see them).

Hashing reads the whole weights file, so the server does it only when a version is loaded into the
engine, the moment the engine reads the files; `IntegrityCache` answers every other request from a
`stat` of the files and hashes again only when a file's size, mtime or inode changed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from adapters.validation import CONFIG_FILE, WEIGHTS_FILE, sha256_file
from adapters.version import AdapterVersion

SERVED_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # what vLLM reads from a version's folder

Signature = tuple[tuple[str, int, int, int] | None, ...]


def manifest_of(folder: Path) -> dict[str, dict]:
    """Size and sha256 of each served file in `folder`, as the registry records them."""
    return {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
            for name in SERVED_FILES}


def recorded_files(version: AdapterVersion) -> dict[str, dict]:
    """The manifest of `version`; versions registered before manifests existed have the weights' sha256 only."""
    return version.files or {WEIGHTS_FILE: {"sha256": version.sha256, "size": None}}


def _check_file(folder: Path, name: str, record: dict) -> str | None:
    path = folder / name
    try:
        size = path.stat().st_size
        if record.get("size") is not None and size != record["size"]:
            return f"{name} is {size} bytes where {record['size']} were registered (truncated or replaced)"
        if sha256_file(path) != record["sha256"]:
            return f"{name} does not match the sha256 recorded at registration (corrupted or replaced)"
    except FileNotFoundError:
        return f"{name} is missing"
    except OSError as e:
        return f"{name} cannot be read ({e.strerror or e})"
    return None


def _check_config_readable(folder: Path) -> str | None:
    try:
        if not isinstance(json.loads((folder / CONFIG_FILE).read_text()), dict):
            return f"{CONFIG_FILE} is not a JSON object"
    except FileNotFoundError:
        return f"{CONFIG_FILE} is missing"
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return f"{CONFIG_FILE} cannot be read as JSON ({e})"
    return None


def verify(version: AdapterVersion) -> list[str]:
    """Every way `version`'s files differ from what was registered; empty when they are intact."""
    folder = Path(version.path)
    if not folder.is_dir():
        return ["its folder is missing from the adapters directory"]
    return verify_folder(folder, recorded_files(version))


def verify_folder(folder: Path, records: dict[str, dict]) -> list[str]:
    """Every way the files in `folder` differ from `records` (a version's manifest); empty when they match."""
    problems = [p for name, record in records.items() if (p := _check_file(folder, name, record))]
    if CONFIG_FILE not in records and (p := _check_config_readable(folder)):
        problems.append(p)
    return problems


def signature(version: AdapterVersion) -> Signature:
    """What a `stat` sees of the served files: changes whenever one is replaced, rewritten or removed."""
    result = []
    for name in SERVED_FILES:
        try:
            st = os.stat(Path(version.path) / name)
            result.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
        except OSError:
            result.append(None)
    return tuple(result)


class IntegrityCache:
    """Verdicts per version, re-hashed only when the files' signature changed (thread-safe)."""

    def __init__(self) -> None:
        self._verdicts: dict[int, tuple[Signature, list[str]]] = {}
        self._lock = threading.Lock()

    def cached(self, version: AdapterVersion) -> list[str] | None:
        """The last verdict if the files look unchanged (a few `stat` calls), else None."""
        with self._lock:
            entry = self._verdicts.get(version.id)
        if entry is None or entry[0] != signature(version):
            return None
        return entry[1]

    def check(self, version: AdapterVersion) -> list[str]:
        """Hash the files now and remember the verdict with the signature seen before hashing."""
        seen = signature(version)  # taken first: a change during hashing shows up at the next look
        problems = verify(version)
        with self._lock:
            self._verdicts[version.id] = (seen, problems)
        return problems
