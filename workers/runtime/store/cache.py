"""The node cache: ``<root>/models/<content hash>/`` holds a model's files exactly as its manifest lists them.

``ensure`` (under a per-model file lock, so replicas and workers on one node share one fetch)
verifies every file against the manifest (size and sha256), removes what the manifest does not
list, fetches what is missing or corrupt into ``<root>/partial/`` (resuming a partial file from
where it stopped), checks the sha256 of what arrived and only then moves it into place: a
corrupted or partial file is fetched again, never served. After each ``ensure`` the least
recently used models beyond ``limit_bytes`` are evicted (never one locked by a fetch).

Nothing here imports Django: the worker runs it for its own node (local targets, a Docker daemon
on its host), the fetch command (``workers.runtime.fetch``) in a container on a remote Docker
host or in a Kubernetes init container.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from workers.runtime.store.manifest import manifest_hash
from workers.runtime.store.resolvers import SourceError, safe_name

HASH_CHUNK = 4 * 1024 * 1024
PROGRESS_EVERY_S = 0.5


class Source(Protocol):
    def stream(self, name: str, start: int = 0) -> Iterator[bytes]: ...


ProgressFn = Callable[[int, int, float], None]  # bytes done, bytes total, bytes per second


@dataclass
class EnsureResult:
    path: Path
    downloaded_bytes: int = 0
    fetched: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # files that were there but did not match
    evicted: list[str] = field(default_factory=list)  # content hashes


class LazySource:
    """A source made on its first read: a cache that only verifies never opens a connection
    (nor imports boto3)."""

    def __init__(self, make: Callable[[], Source]) -> None:
        self.make = make
        self._source: Source | None = None

    def stream(self, name: str, start: int = 0) -> Iterator[bytes]:
        if self._source is None:
            self._source = self.make()
        return self._source.stream(name, start)


def file_sha256(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return digest.hexdigest()


def _matches(path: Path, entry: dict[str, Any], meter: _Meter) -> bool:
    if path.is_symlink() or not path.is_file() or path.stat().st_size != entry["size"]:
        return False
    return file_sha256(path, meter.add) == str(entry["sha256"])


class _Meter:
    """Calls ``on_progress`` at most every PROGRESS_EVERY_S with bytes done, total and rate."""

    def __init__(self, total: int, on_progress: ProgressFn | None) -> None:
        self.total, self.done, self.on_progress = total, 0, on_progress
        self.started = self.last = time.monotonic()

    def add(self, count: int, *, final: bool = False) -> None:
        self.done += count
        now = time.monotonic()
        if self.on_progress is not None and (final or now - self.last >= PROGRESS_EVERY_S):
            self.last = now
            self.on_progress(self.done, self.total, self.done / max(now - self.started, 1e-6))


class ModelCache:
    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit_bytes = limit_bytes
        for sub in ("models", "partial", "locks", "used"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def path_of(self, content_hash: str) -> Path:
        return self.root / "models" / content_hash

    @contextlib.contextmanager
    def _lock(self, content_hash: str, *, blocking: bool = True) -> Iterator[bool]:
        with (self.root / "locks" / f"{content_hash}.lock").open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ ensure

    def ensure(
        self,
        content_hash: str,
        manifest: list[dict[str, Any]],
        source: Source,
        on_progress: ProgressFn | None = None,
        on_verify: ProgressFn | None = None,
    ) -> EnsureResult:
        """The verified directory of the model; fetched (or repaired) first when needed.

        ``on_progress`` follows the download (bytes fetched of the bytes missing), ``on_verify``
        the check of what is already there (bytes hashed of the model's size).
        """
        if len(content_hash) != 64 or manifest_hash(manifest) != content_hash:
            raise SourceError("The model's manifest does not match its content hash.", reason="ManifestMismatch")
        for entry in manifest:
            safe_name(entry["name"])
        with self._lock(content_hash):
            target = self.path_of(content_hash)
            target.mkdir(exist_ok=True)
            self._remove_strays(target, {entry["name"] for entry in manifest})
            checking = _Meter(sum(e["size"] for e in manifest), on_verify)
            bad = [entry for entry in manifest if not _matches(target / entry["name"], entry, checking)]
            result = EnsureResult(path=target)
            result.repaired = [e["name"] for e in bad if (target / e["name"]).exists()]
            meter = _Meter(sum(e["size"] for e in bad), on_progress)
            for entry in bad:
                result.downloaded_bytes += self._fetch(content_hash, entry, source, meter)
                result.fetched.append(entry["name"])
            if bad:
                meter.add(0, final=True)
            self._mark_used(content_hash)
        result.evicted = self.evict(keep=content_hash)
        return result

    def _mark_used(self, content_hash: str) -> None:
        """Stamp the model's last use with the clock's full resolution: ``touch`` takes the
        kernel's coarse time (a few ms), which orders models used in quick succession at random."""
        used = self.root / "used" / content_hash
        used.touch()
        now = time.time_ns()
        os.utime(used, ns=(now, now))

    def _remove_strays(self, target: Path, names: set[str]) -> None:
        """Whatever the manifest does not list (a file dropped in, a symlink) goes."""
        for dirpath, dirnames, filenames in os.walk(target, topdown=False):
            base = Path(dirpath)
            for entry in [*filenames, *dirnames]:
                path = base / entry
                rel = path.relative_to(target).as_posix()
                if path.is_symlink() or (path.is_file() and rel not in names):
                    path.unlink()
                elif path.is_dir() and not any(n.startswith(rel + "/") for n in names):
                    shutil.rmtree(path)

    def _fetch(self, content_hash: str, entry: dict[str, Any], source: Source, meter: _Meter) -> int:
        """Fetch one file into place, resuming a partial download once; returns bytes downloaded."""
        partial = self.root / "partial" / content_hash / entry["name"]
        partial.parent.mkdir(parents=True, exist_ok=True)
        downloaded = 0
        for _attempt in range(2):
            have = partial.stat().st_size if partial.exists() and not partial.is_symlink() else 0
            if have > entry["size"]:
                partial.unlink()
                have = 0
            meter.add(have)
            with partial.open("ab" if have else "wb") as out:
                for chunk in source.stream(entry["name"], have) if have < entry["size"] else iter(()):
                    out.write(chunk)
                    downloaded += len(chunk)
                    meter.add(len(chunk))
            if partial.stat().st_size == entry["size"] and file_sha256(partial) == entry["sha256"]:
                final = self.path_of(content_hash) / entry["name"]
                final.parent.mkdir(parents=True, exist_ok=True)
                partial.replace(final)
                return downloaded
            # What arrived does not match: start this file over, from nothing.
            meter.add(-partial.stat().st_size)
            partial.unlink()
        raise SourceError(
            f"{entry['name']} does not match the manifest after downloading it again: the source changed "
            "since registration.",
            reason="ChecksumMismatch",
        )

    # ------------------------------------------------------------------ eviction and stats

    def sizes(self) -> dict[str, int]:
        found = {}
        for model in (self.root / "models").iterdir():
            found[model.name] = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
        return found

    def evict(self, *, keep: str = "") -> list[str]:
        """Remove least recently used models until the cache fits ``limit_bytes``; their hashes."""
        sizes = self.sizes()
        total = sum(sizes.values())
        evicted: list[str] = []

        def last_used(content_hash: str) -> float:
            used = self.root / "used" / content_hash
            return used.stat().st_mtime if used.exists() else 0.0

        for content_hash in sorted(sizes, key=last_used):
            if total <= self.limit_bytes:
                break
            if content_hash == keep:
                continue
            with self._lock(content_hash, blocking=False) as locked:
                if not locked:
                    continue
                shutil.rmtree(self.path_of(content_hash), ignore_errors=True)
                shutil.rmtree(self.root / "partial" / content_hash, ignore_errors=True)
                (self.root / "used" / content_hash).unlink(missing_ok=True)
            total -= sizes[content_hash]
            evicted.append(content_hash)
        return evicted

    def describe(self) -> str:
        return json.dumps({"root": str(self.root), "limit_bytes": self.limit_bytes, "models": self.sizes()})
