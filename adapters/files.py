"""Where registered versions' files live and how a host reads them: the `AdapterFiles` seam.

docs/kubernetes.md, "The object-storage seam". Two implementations, chosen by FLYWHEEL_ADAPTER_STORE:

- `SharedFolder` (unset, the default): every process mounts one adapters folder (a ReadWriteMany volume
  across hosts). Publishing a version is the registry's rename into place; its folder is simply there.
- `ObjectStoreFiles` (adapters/object_store.py, `s3://bucket/prefix`): registration uploads the files, and
  each host fetches a version into a cache of its own the first time it needs it.

The registry row is the commit point either way: `publish` runs inside the registration's write transaction,
before the row commits, so a version whose row exists has published files. Files whose row never committed
are garbage (overwritten by the next registration of that number), never a version.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from adapters.version import AdapterVersion

if TYPE_CHECKING:
    from flywheel.settings import Settings


class AdapterFiles(Protocol):
    """How the registry publishes a version's files and how this host gets them."""

    root: Path  # where this host reads versions: `root / <name>/v<N>` (AdapterVersion.path)

    def local_folder(self, version: AdapterVersion) -> Path:
        """The version's folder on this host, fetched first when absent.

        Raises AdapterUnavailable when the files cannot be got now (nothing to record), FilesMismatch when the
        stored files are there and differ from the version's manifest (the version is broken).
        """
        ...

    def publish(self, staging: Path, rel: Path) -> None:
        """Make the checked copy in `staging` the files of `rel` (`<name>/v<N>`) for every host."""
        ...

    def forget(self, version: AdapterVersion) -> bool:
        """Drop this host's copy of the version so the next `local_folder` fetches it again; False when the
        copy here is the stored files themselves (then a problem found in them is the version's)."""
        ...


class SharedFolder:
    """Today's layout: one folder every process mounts; `local_folder` is where the version already is."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"SharedFolder({str(self.root)!r})"

    def local_folder(self, version: AdapterVersion) -> Path:
        """The version's folder in the shared adapters folder (it is never fetched: it is there or broken)."""
        return Path(version.path)

    def forget(self, version: AdapterVersion) -> bool:
        return False  # the shared folder is the store: there is nothing to fetch again

    def publish(self, staging: Path, rel: Path) -> None:
        """Rename the staging copy (on the same volume) into place: a version's folder is whole or absent."""
        final = self.root / rel
        if final.exists():  # left by a process that died between its rename and its commit
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)


def adapter_files(settings: Settings) -> AdapterFiles:
    """The files implementation the settings choose (built once, at an entry point, and passed down)."""
    if settings.adapter_store is None:
        return SharedFolder(settings.adapters_dir)
    from adapters.object_store import ObjectStoreFiles  # imports boto3: only where the object store is used

    return ObjectStoreFiles.from_url(
        settings.adapter_store, settings.adapter_cache_dir, max_bytes=settings.adapter_cache_mib << 20,
        endpoint_url=settings.adapter_store_endpoint,
    )
