"""A model's manifest (every file with its size and sha256) and the content hash that names it.

Registration builds the manifest (``controlplane.catalog.store.metadata``); every node checks
what it fetched against it. ``checked_manifest`` is the node's side of that: a manifest that
reaches a fetch from outside (a fetch plan) is taken only in this shape, with safe names and
the content hash it claims.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from workers.runtime.store.resolvers import MAX_FILES, SourceError, safe_name

SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_FILE_BYTES = 1 << 50  # 1 PiB: a size beyond this is a mistake, not a model file


def manifest_hash(manifest: list[dict[str, Any]]) -> str:
    """The content hash of a manifest: sha256 of its canonical JSON (names, sizes, sha256s)."""
    canonical = json.dumps(
        sorted(
            ({"name": f["name"], "size": f["size"], "sha256": f["sha256"]} for f in manifest), key=lambda f: f["name"]
        ),
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def checked_manifest(manifest: Any, content_hash: Any) -> list[dict[str, Any]]:
    """``manifest`` as a list of ``{"name", "size", "sha256"}`` whose hash is ``content_hash``;
    else ``SourceError`` (reason ``ManifestMismatch``)."""

    def refuse(why: str) -> SourceError:
        return SourceError(f"The model's manifest is refused: {why}.", reason="ManifestMismatch")

    if not isinstance(content_hash, str) or not SHA256.fullmatch(content_hash):
        raise refuse("the content hash is not a sha256")
    if not isinstance(manifest, list) or not 0 < len(manifest) <= MAX_FILES:
        raise refuse(f"it must list 1 to {MAX_FILES} files")
    files = []
    for entry in manifest:
        if not isinstance(entry, dict):
            raise refuse("an entry is not an object")
        name, size, sha = entry.get("name"), entry.get("size"), entry.get("sha256")
        if not isinstance(name, str) or not isinstance(sha, str) or not SHA256.fullmatch(sha):
            raise refuse("an entry has no name or no sha256")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_BYTES:
            raise refuse("an entry has no valid size")
        files.append({"name": safe_name(name), "size": size, "sha256": sha})
    if len({f["name"] for f in files}) != len(files):
        raise refuse("a file is listed twice")
    if manifest_hash(files) != content_hash:
        raise refuse("it does not match its content hash")
    return files
