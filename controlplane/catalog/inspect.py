"""Read a model directory's metadata without loading weights (config, safetensors headers)."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_HEADER_BYTES = 100 * 1024 * 1024
# A model directory holds a handful of files; walking "/" or a home directory must stop early.
MAX_FILES = 10_000


@dataclass
class ModelInfo:
    format: str = ""
    architecture: str = ""
    parameter_count: int = 0
    size_bytes: int = 0
    context_length: int = 0
    tokenizer_info: dict[str, Any] = field(default_factory=dict)
    task: str = "generate"
    pooling: str = ""
    random_weights: bool = False
    problems: list[str] = field(default_factory=list)


def _safetensors_params(path: Path) -> int:
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name} has an implausible header")
        header = json.loads(fh.read(length))
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        total += math.prod(meta["shape"])
    return total


def inspect_model_dir(path: Path) -> ModelInfo:
    info = ModelInfo()
    files = _files(path, info)
    if files is None:
        return info
    info.size_bytes = sum(p.stat().st_size for p in files)
    _read_weights(info, files)
    _read_config(info, path)
    _read_tokenizer(info, path)
    _read_embedding(info, path)
    _read_builder_marker(info, path)
    return info


# sentence-transformers' pooling config -> the runtime's ``--pooling`` (workers.runtime.embeddings).
_POOLING_MODES = (
    ("pooling_mode_lasttoken", "last"),
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
)


def _read_json(path: Path) -> Any:
    try:
        if path.is_file() and path.stat().st_size < 1024 * 1024:
            return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    return None


def _read_embedding(info: ModelInfo, path: Path) -> None:
    """A sentence-transformers directory (``1_Pooling/config.json``) is an embedding model."""
    pooling = _read_json(path / "1_Pooling" / "config.json")
    if not isinstance(pooling, dict):
        return
    info.task = "embed"
    info.pooling = next((name for key, name in _POOLING_MODES if pooling.get(key) is True), "mean")


def _read_builder_marker(info: ModelInfo, path: Path) -> None:
    """Hangar's tiny-model builder marks its random-weight models (``hangar-tinymodel.json``)."""
    marker = _read_json(path / "hangar-tinymodel.json")
    info.random_weights = isinstance(marker, dict) and marker.get("random_weights") is True


def _files(path: Path, info: ModelInfo) -> list[Path] | None:
    """The files under ``path``; None (and a problem noted) when there are too many entries to be a model."""
    files = []
    for count, entry in enumerate(path.rglob("*")):
        if count >= MAX_FILES:
            info.problems.append(f"more than {MAX_FILES} entries: this is not a model directory")
            return None
        if entry.is_file():
            files.append(entry)
    return files


def _read_weights(info: ModelInfo, files: list[Path]) -> None:
    weights = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
    if weights:
        info.format = "safetensors"
        try:
            info.parameter_count = sum(_safetensors_params(p) for p in weights)
        except (ValueError, KeyError, json.JSONDecodeError, OSError) as exc:
            info.problems.append(f"could not read safetensors header: {exc}")
    elif pickles:
        info.format = "pytorch"
    else:
        info.problems.append("no weight files (*.safetensors) found")


def _read_config(info: ModelInfo, path: Path) -> None:
    config_path = path / "config.json"
    if not config_path.is_file():
        info.problems.append("config.json missing")
        return
    try:
        config = json.loads(config_path.read_text())
        archs = config.get("architectures") or [config.get("model_type", "")]
        info.architecture = str(archs[0]) if archs else ""
        info.context_length = int(config.get("max_position_embeddings") or 0)
    except (ValueError, TypeError, OSError) as exc:
        info.problems.append(f"config.json unreadable: {exc}")


def _read_tokenizer(info: ModelInfo, path: Path) -> None:
    tok_config = path / "tokenizer_config.json"
    if not tok_config.is_file():
        return
    try:
        tok = json.loads(tok_config.read_text())
        info.tokenizer_info = {
            "class": tok.get("tokenizer_class", ""),
            "chat_template": bool(tok.get("chat_template")) or (path / "chat_template.jinja").is_file(),
            "model_max_length": tok.get("model_max_length")
            if isinstance(tok.get("model_max_length"), int) and tok.get("model_max_length") < 10**9
            else None,
        }
    except (ValueError, OSError) as exc:
        info.problems.append(f"tokenizer_config.json unreadable: {exc}")
