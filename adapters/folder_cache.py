"""A bounded cache of version folders on this host's disk, evicted least recently used first, by bytes.

The object store's fetches land here (adapters/object_store.py). Versions are immutable, so a cached folder
never goes stale; it only leaves the cache. Recency is the last time a folder was asked for (a load, a fetch, a
re-check after its files changed), not every request: serving a loaded version reads no files, so size the
cache to hold at least the versions the engine keeps (FLYWHEEL_MAX_CPU_LORAS of them). A loaded version whose
folder was evicted is fetched again by the resolver's next stat check, before vLLM reads it again.

An evicted folder is first renamed aside (`.evicting-<uuid>-<host>-<pid>`) and then deleted, so a version's
folder is whole or absent; a process killed mid-delete leaves a folder the next cache on this host clears.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from flywheel.scratch import clear_dead, owned_name

logger = logging.getLogger(__name__)

FETCH = ".fetch-"  # root/.fetch-<uuid>-<host>-<pid>: a download before its check and rename into place
EVICTING = ".evicting-"  # root/.evicting-<uuid>-<host>-<pid>: an evicted folder being deleted


def folder_bytes(folder: Path) -> int:
    """The bytes of the files directly in `folder` (a version's folder holds no subfolders)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


class FolderCache:
    """`root/<name>/v<N>` folders, at most `max_bytes` of them (the newest one is kept whatever its size)."""

    def __init__(self, root: Path, max_bytes: int):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        for prefix in (FETCH, EVICTING):
            clear_dead(self.root, prefix)
        self._sizes: OrderedDict[str, int] = OrderedDict()  # rel -> bytes, least recently used first
        self._lock = threading.Lock()
        self._scan()

    def _scan(self) -> None:
        """Count the folders an earlier process left, the least recently modified first."""
        found = []
        for adapter in self.root.iterdir():
            if adapter.name.startswith(".") or not adapter.is_dir():
                continue
            for folder in adapter.iterdir():
                if folder.is_dir():
                    found.append((folder.stat().st_mtime, str(folder.relative_to(self.root)), folder_bytes(folder)))
        for _, rel, size in sorted(found):
            self._sizes[rel] = size

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __contains__(self, rel: str) -> bool:
        with self._lock:
            return rel in self._sizes

    def staging(self) -> Path:
        """A fresh folder to download into, on the cache's filesystem (so the rename into place is atomic)."""
        folder = self.root / owned_name(FETCH, uuid.uuid4().hex)
        folder.mkdir()
        return folder

    def touch(self, rel: str) -> None:
        """`rel` was just used: it is the last to be evicted."""
        with self._lock:
            if rel in self._sizes:
                self._sizes.move_to_end(rel)

    def add(self, rel: str) -> None:
        """Count the folder now at `root/rel` as the most recently used, and evict others past the bound."""
        size = folder_bytes(self.root / rel)
        with self._lock:
            self._sizes[rel] = size
            self._sizes.move_to_end(rel)
            victims = []
            total = sum(self._sizes.values())
            while total > self.max_bytes and len(self._sizes) > 1:
                victim, victim_size = self._sizes.popitem(last=False)
                victims.append(victim)
                total -= victim_size
        for victim in victims:
            self.drop(victim)
            logger.info("adapter cache: evicted %s (%d of %d bytes used)", victim, total, self.max_bytes)

    def drop(self, rel: str) -> None:
        """Remove `root/rel` from the cache and the disk (renamed aside first: never half a folder in place)."""
        with self._lock:
            self._sizes.pop(rel, None)
        aside = self.root / owned_name(EVICTING, uuid.uuid4().hex)
        try:
            (self.root / rel).rename(aside)
        except FileNotFoundError:
            return  # already gone (another process on this host evicted it)
        shutil.rmtree(aside, ignore_errors=True)
