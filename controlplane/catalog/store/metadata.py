"""What registration reads from a source without downloading the weights, and the manifest.

Config and tokenizer files are small and read whole; each safetensors file gives its parameter
count and dtypes from its header (two range reads: the 8-byte length, then the JSON header).
The manifest lists every file with its size and sha256: taken from the source when it states
it (the hub's LFS files), else computed by streaming the file through the hash (nothing is
stored). Its content hash names the model in every node's cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workers.runtime.store.manifest import manifest_hash
from workers.runtime.store.resolvers import RemoteFile, Resolver, SourceError

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_SMALL_FILE = 16 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass
class ModelInfo:
    format: str = ""
    architecture: str = ""
    parameter_count: int = 0
    size_bytes: int = 0
    context_length: int = 0
    weight_dtypes: list[str] = field(default_factory=list)
    tokenizer_info: dict[str, Any] = field(default_factory=dict)
    task: str = "generate"
    pooling: str = ""
    random_weights: bool = False
    problems: list[str] = field(default_factory=list)
    manifest: list[dict[str, Any]] = field(default_factory=list)
    content_hash: str = ""


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > name.rfind("/") else ""


def _small_json(resolver: Resolver, file: RemoteFile) -> Any:
    if file.size > MAX_SMALL_FILE:
        raise ValueError(f"{file.name} is larger than {MAX_SMALL_FILE} bytes")
    return json.loads(resolver.read(file.name, 0, file.size))


def safetensors_header(resolver: Resolver, file: RemoteFile) -> dict[str, Any]:
    raw = resolver.read(file.name, 0, 8)
    if len(raw) != 8:
        raise ValueError(f"{file.name} is not a safetensors file")
    (length,) = struct.unpack("<Q", raw)
    if length > MAX_HEADER_BYTES or length + 8 > file.size:
        raise ValueError(f"{file.name} has an implausible header")
    header = json.loads(resolver.read(file.name, 8, length))
    if not isinstance(header, dict):
        raise ValueError(f"{file.name} has a header that is not an object")
    return header


def _read_weights(info: ModelInfo, resolver: Resolver, files: list[RemoteFile]) -> None:
    weights = [f for f in files if _suffix(f.name) in WEIGHT_SUFFIXES]
    pickles = [f for f in files if _suffix(f.name) in PICKLE_SUFFIXES]
    if not weights:
        if pickles:
            info.format = "pytorch"
        else:
            info.problems.append("no weight files (*.safetensors) found")
        return
    info.format = "safetensors"
    dtypes: set[str] = set()
    try:
        for file in weights:
            for name, meta in safetensors_header(resolver, file).items():
                if name == "__metadata__":
                    continue
                info.parameter_count += math.prod(meta["shape"])
                dtypes.add(SAFETENSORS_DTYPES.get(str(meta.get("dtype")), str(meta.get("dtype"))))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, OSError) as exc:
        info.problems.append(f"could not read safetensors header: {exc}")
    info.weight_dtypes = sorted(dtypes)


def _read_config(info: ModelInfo, resolver: Resolver, by_name: dict[str, RemoteFile]) -> None:
    file = by_name.get("config.json")
    if file is None:
        info.problems.append("config.json missing")
        return
    try:
        config = _small_json(resolver, file)
        archs = config.get("architectures") or [config.get("model_type", "")]
        info.architecture = str(archs[0])[:100] if archs else ""
        info.context_length = int(config.get("max_position_embeddings") or 0)
    except (ValueError, TypeError, AttributeError, OSError) as exc:
        info.problems.append(f"config.json unreadable: {exc}")


def _read_tokenizer(info: ModelInfo, resolver: Resolver, by_name: dict[str, RemoteFile]) -> None:
    file = by_name.get("tokenizer_config.json")
    if file is None:
        return
    try:
        tok = _small_json(resolver, file)
        max_length = tok.get("model_max_length")
        info.tokenizer_info = {
            "class": str(tok.get("tokenizer_class", ""))[:100],
            "chat_template": bool(tok.get("chat_template")) or "chat_template.jinja" in by_name,
            "model_max_length": max_length if isinstance(max_length, int) and max_length < 10**9 else None,
        }
    except (ValueError, AttributeError, OSError) as exc:
        info.problems.append(f"tokenizer_config.json unreadable: {exc}")


def file_sha256(resolver: Resolver, name: str) -> str:
    digest = hashlib.sha256()
    for chunk in resolver.stream(name):
        digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    resolver: Resolver, files: list[RemoteFile], on_file: Callable[[RemoteFile], None] | None = None
) -> list[dict[str, Any]]:
    manifest = []
    for file in files:
        if on_file is not None:
            on_file(file)
        manifest.append(
            {"name": file.name, "size": file.size, "sha256": file.sha256 or file_sha256(resolver, file.name)}
        )
    return manifest


# sentence-transformers' pooling config -> the runtime's ``--pooling`` (workers.runtime.embeddings).
_POOLING_MODES = (
    ("pooling_mode_lasttoken", "last"),
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
)


def _json_file(resolver: Resolver, by_name: dict[str, RemoteFile], name: str) -> Any:
    """A small JSON file of the source, or None when absent, too large or not JSON."""
    file = by_name.get(name)
    try:
        return _small_json(resolver, file) if file is not None else None
    except ValueError:
        return None


def _read_embedding(info: ModelInfo, resolver: Resolver, by_name: dict[str, RemoteFile]) -> None:
    """A sentence-transformers directory (``1_Pooling/config.json``) is an embedding model."""
    pooling = _json_file(resolver, by_name, "1_Pooling/config.json")
    if not isinstance(pooling, dict):
        return
    info.task = "embed"
    info.pooling = next((name for key, name in _POOLING_MODES if pooling.get(key) is True), "mean")


def _read_builder_marker(info: ModelInfo, resolver: Resolver, by_name: dict[str, RemoteFile]) -> None:
    """Hangar's tiny-model builder marks its random-weight models (``hangar-tinymodel.json``)."""
    marker = _json_file(resolver, by_name, "hangar-tinymodel.json")
    info.random_weights = isinstance(marker, dict) and marker.get("random_weights") is True


def inspect_source(resolver: Resolver, *, max_bytes: int = 0, with_manifest: bool = True) -> ModelInfo:
    """Metadata and manifest of a source; a ``SourceError`` when it cannot be listed or read.

    ``max_bytes`` (0: no limit) refuses a model larger than that before any file is hashed.
    """
    info = ModelInfo()
    files = resolver.files()
    info.size_bytes = sum(f.size for f in files)
    if max_bytes and info.size_bytes > max_bytes:
        raise SourceError(
            f"The model is {info.size_bytes} bytes; the limit is {max_bytes} bytes.", reason="SourceTooLarge"
        )
    by_name = {f.name: f for f in files}
    _read_weights(info, resolver, files)
    _read_config(info, resolver, by_name)
    _read_tokenizer(info, resolver, by_name)
    _read_embedding(info, resolver, by_name)
    _read_builder_marker(info, resolver, by_name)
    if with_manifest and info.format:
        info.manifest = build_manifest(resolver, files)
        info.content_hash = manifest_hash(info.manifest)
    return info
