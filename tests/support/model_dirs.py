"""Model directories on disk that the catalog accepts, in the session's model root."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from django.conf import settings


def make_model_dir(root: Path, name: str = "m") -> Path:
    """A model directory the catalog accepts: config.json and a small safetensors file."""
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 256})
    )
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 24)
    return path


def tenant_folder(tenant: Any) -> Path:
    """The tenant's own folder in the first model root (``<root>/<slug>/``)."""
    return Path(settings.HANGAR_MODEL_ROOTS[0]) / tenant.slug


def shared_folder() -> Path:
    """The first model root's shared folder (``<root>/_shared/``), where platform admins publish."""
    return Path(settings.HANGAR_MODEL_ROOTS[0]) / settings.HANGAR_MODEL_SHARED_FOLDER


def make_tenant_model_dir(tenant: Any, name: str = "m") -> Path:
    """A model directory in ``tenant``'s own folder, which its members may register."""
    return make_model_dir(tenant_folder(tenant), name)
