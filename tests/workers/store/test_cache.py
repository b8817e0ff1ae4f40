"""The node cache on its own, with a real source (a directory through ``FileResolver``): a download
broken off half-way resumes from where it stopped, a source that changed since registration is
refused (never served), strays are removed, and least recently used models are evicted."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.catalog.store.metadata import build_manifest
from workers.runtime.store.cache import ModelCache
from workers.runtime.store.manifest import manifest_hash
from workers.runtime.store.resolvers import FileResolver, SourceError


class CountingSource(FileResolver):
    """A directory source that counts the bytes it serves and can break off after ``limit`` bytes."""

    def __init__(self, root: Path, limit: int | None = None) -> None:
        super().__init__(root)
        self.served = 0
        self.starts: list[int] = []
        self.limit = limit

    def stream(self, name: str, start: int = 0) -> Iterator[bytes]:
        self.starts.append(start)
        for chunk in super().stream(name, start):
            if self.limit is not None and self.served + len(chunk) > self.limit:
                part = chunk[: self.limit - self.served]
                self.served += len(part)
                yield part
                raise SourceError("The download broke off: ConnectionResetError.", reason="SourceUnreachable")
            self.served += len(chunk)
            yield chunk


def model(root: Path, name: str, size: int) -> tuple[Path, list[dict[str, object]], str]:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(os.urandom(size))
    manifest = build_manifest(FileResolver(path), FileResolver(path).files())
    return path, manifest, manifest_hash(manifest)


def test_a_broken_download_resumes_where_it_stopped(tmp_path: Path) -> None:
    path, manifest, content = model(tmp_path / "src", "m", 3 * 1024 * 1024)
    cache = ModelCache(tmp_path / "cache", 1 << 40)
    broken = CountingSource(path, limit=1024 * 1024 + 2)
    with pytest.raises(SourceError):
        cache.ensure(content, manifest, broken)
    assert not (cache.path_of(content) / "model.safetensors").exists()  # a partial file is never in place

    resumed = CountingSource(path)
    result = cache.ensure(content, manifest, resumed)
    weights = next(e for e in manifest if e["name"] == "model.safetensors")
    already = broken.served - 2  # config.json (2 bytes) came whole the first time
    assert resumed.starts[-1] == already > 0
    assert result.downloaded_bytes == 3 * 1024 * 1024 - already
    assert hashlib.sha256((result.path / "model.safetensors").read_bytes()).hexdigest() == weights["sha256"]


def test_a_source_changed_since_registration_is_refused_and_not_served(tmp_path: Path) -> None:
    path, manifest, content = model(tmp_path / "src", "m", 4096)
    (path / "model.safetensors").write_bytes(os.urandom(4096))  # same size, other bytes
    cache = ModelCache(tmp_path / "cache", 1 << 40)
    with pytest.raises(SourceError) as info:
        cache.ensure(content, manifest, FileResolver(path))
    assert info.value.reason == "ChecksumMismatch"
    assert not (cache.path_of(content) / "model.safetensors").exists()


def test_strays_go_and_a_tampered_manifest_is_refused(tmp_path: Path) -> None:
    path, manifest, content = model(tmp_path / "src", "m", 4096)
    cache = ModelCache(tmp_path / "cache", 1 << 40)
    target = cache.ensure(content, manifest, FileResolver(path)).path
    (target / "extra.py").write_text("import os")
    (target / "link").symlink_to("/etc/passwd")
    assert cache.ensure(content, manifest, FileResolver(path)).downloaded_bytes == 0
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(SourceError):
        cache.ensure(content, [*manifest, {"name": "../x", "size": 1, "sha256": "0" * 64}], FileResolver(path))


def test_least_recently_used_models_are_evicted_above_the_limit(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache", 10_000)
    first = model(tmp_path / "src", "a", 4000)
    second = model(tmp_path / "src", "b", 4000)
    third = model(tmp_path / "src", "c", 4000)
    cache.ensure(first[2], first[1], FileResolver(first[0]))
    cache.ensure(second[2], second[1], FileResolver(second[0]))
    cache.ensure(first[2], first[1], FileResolver(first[0]))  # "a" used again: "b" is now the oldest
    result = cache.ensure(third[2], third[1], FileResolver(third[0]))
    assert result.evicted == [second[2]]
    assert set(cache.sizes()) == {first[2], third[2]}
