"""Adapter files in an S3-compatible object store, fetched into a bounded cache on each host.

docs/kubernetes.md, "The object-storage seam". A version's files are objects at `<prefix>/<name>/v<N>/<file>`.
Registration uploads them inside its write transaction, before the row commits (adapters/files.py). A host that
needs a version downloads it into `<cache>/.fetch-<uuid>-<host>-<pid>`, checks every file against the row's
manifest, and renames the folder into `<cache>/<name>/v<N>`; adapters/folder_cache.py bounds the cache.

What a failure means decides what is recorded. A fetch that fails (the store unreachable, an object missing)
says nothing about the version: `AdapterUnavailable`, this replica answers 503 and retries at the next request,
nothing is written to the registry. An object that is there and differs from the manifest is the version's own
fault: `FilesMismatch`, and the resolver marks it broken, as for a mismatching file in the shared folder.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from adapters.errors import AdapterUnavailable, FilesMismatch
from adapters.folder_cache import FolderCache
from adapters.integrity import SERVED_FILES, recorded_files, verify_folder
from adapters.version import AdapterVersion, version_dir

logger = logging.getLogger(__name__)

MISSING_CODES = {"404", "NoSuchKey", "NotFound"}  # what S3 answers for an absent object (HEAD gives a bare 404)
# Bounded so a hung store fails the request with 503 instead of holding it (and the version's load lock).
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})


class ObjectStoreFiles:
    """Versions' files as objects in `bucket` under `prefix`, read through a cache of at most `max_bytes`."""

    def __init__(self, bucket: str, prefix: str, cache_dir: Path, *, max_bytes: int,
                 endpoint_url: str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache = FolderCache(cache_dir, max_bytes)
        self.root = self.cache.root
        # Credentials and region come from boto3's own chain (environment, config files, a pod's IAM role).
        self._client = boto3.client("s3", endpoint_url=endpoint_url, config=CLIENT_CONFIG)
        self._verified: set[str] = set()  # cached folders this process has checked against their manifest
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, cache_dir: Path, **options: object) -> ObjectStoreFiles:
        """From `s3://bucket/prefix` (FLYWHEEL_ADAPTER_STORE)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an adapter store must be s3://bucket/prefix, not {url!r}")
        return cls(parsed.netloc, parsed.path, cache_dir, **options)

    def __repr__(self) -> str:
        return f"ObjectStoreFiles('s3://{self.bucket}/{self.prefix}')"

    def key(self, rel: Path | str, name: str) -> str:
        """The object key of file `name` of the version at `rel` (`<name>/v<N>`)."""
        return "/".join(part for part in (self.prefix, Path(rel).as_posix(), name) if part)

    def publish(self, staging: Path, rel: Path) -> None:
        """Upload the served files of the checked copy in `staging`; AdapterUnavailable when the store refuses."""
        for name in SERVED_FILES:
            try:
                self._client.upload_file(str(staging / name), self.bucket, self.key(rel, name))
            except (BotoCoreError, ClientError, Boto3Error) as e:
                raise AdapterUnavailable(
                    f"the adapter store could not take {Path(rel).as_posix()}/{name}, so nothing was registered;"
                    f" retry when it is reachable ({e})") from e
        logger.info("uploaded %s to s3://%s/%s", rel, self.bucket, self.key(rel, ""))

    def local_folder(self, version: AdapterVersion) -> Path:
        """The version's folder in this host's cache, downloaded and checked first when it is not there."""
        rel = version_dir(version.adapter, version.version).as_posix()
        final = self.root / rel
        with self._lock:
            known = rel in self._verified
        if known and final.is_dir():
            self.cache.touch(rel)
            return final
        records = recorded_files(version)
        if final.is_dir():  # an earlier process's fetch: used once it checks out
            if not verify_folder(final, records):
                return self._keep(rel)
            logger.warning("adapter cache: %s differs from its manifest on this disk; fetching it again", rel)
            self.cache.drop(rel)
        self._fetch(version, rel, records)
        return self._keep(rel)

    def forget(self, version: AdapterVersion) -> bool:
        """Drop the cached copy (a check found it changed or gone): the next `local_folder` fetches it anew."""
        rel = version_dir(version.adapter, version.version).as_posix()
        with self._lock:
            self._verified.discard(rel)
        self.cache.drop(rel)
        return True

    def _keep(self, rel: str) -> Path:
        with self._lock:
            self._verified.add(rel)
        self.cache.add(rel)  # may evict others, never this one
        return self.root / rel

    def _fetch(self, version: AdapterVersion, rel: str, records: dict[str, dict]) -> None:
        staging = self.cache.staging()
        try:
            for name in dict.fromkeys([*SERVED_FILES, *records]):
                self._download(version, self.key(rel, name), staging / name)
            if problems := verify_folder(staging, records):
                raise FilesMismatch([f"in the adapter store, {p}" for p in problems])
            final = self.root / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(final)
            except OSError:
                if not final.is_dir():
                    raise
                # another process on this host fetched it first: the same immutable, checked files
            logger.info("fetched %s from the adapter store into the cache", version.lora_name)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _download(self, version: AdapterVersion, key: str, dest: Path) -> None:
        name = key.rsplit("/", 1)[-1]
        try:
            self._client.download_file(self.bucket, key, str(dest))
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            what = "is missing from" if code in MISSING_CODES else f"was refused ({code}) by"
            raise AdapterUnavailable(self._unavailable(version, f"its {name} {what} the adapter store")) from e
        except (BotoCoreError, Boto3Error) as e:
            raise AdapterUnavailable(self._unavailable(version, f"the adapter store cannot be reached ({e})")) from e

    @staticmethod
    def _unavailable(version: AdapterVersion, why: str) -> str:
        return (f"adapter version {version.lora_name} cannot be fetched to this replica now: {why}. Nothing was"
                " recorded against the version; retry shortly, or ask an operator to check the adapter store")
