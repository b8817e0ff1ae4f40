"""Load a model directory safely: safetensors only, no remote code, no network.

The path is the ordinary ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(DIR)``
with ``local_files_only`` and ``HF_HUB_OFFLINE=1``. Pickle-based weights (``.bin``, ``.pt``
...) can execute arbitrary code when loaded, so a directory that only has those is refused
unless the operator passes ``--allow-unsafe-weights``; ``trust_remote_code`` stays off unless
``--trust-remote-code`` is given.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16")
QUANTIZATIONS = ("none", "int8")
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelLoadError(Exception):
    """The model directory cannot be served; the message is meant for operators."""


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load and place the model."""

    dtype: str = "float32"
    quantization: str = "none"
    device: str = "cpu"
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
    task: str = "generate"  # "embed": the bare model (AutoModel), for workers.runtime.embeddings


@dataclass(slots=True)
class LoadedModel:
    """A model ready for the engine."""

    model: Any
    tokenizer: Any
    eos_token_ids: list[int]
    max_model_len: int
    num_parameters: int
    weights_bytes: int


def check_weights(model_dir: Path, allow_unsafe: bool) -> bool:
    """Validate the weight files; return True when safetensors are present.

    Raises ``ModelLoadError`` for a missing directory, a directory without weights, or one
    with only pickle-based weights when ``allow_unsafe`` is false.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise ModelLoadError(f"{model_dir} has no config.json; not a transformers model directory")
    files = [p.name for p in model_dir.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return True
    unsafe = sorted(name for name in files if name.endswith(UNSAFE_SUFFIXES))
    if not unsafe:
        raise ModelLoadError(f"{model_dir} contains no weights (*.safetensors)")
    if not allow_unsafe:
        raise ModelLoadError(
            f"{model_dir} only has pickle-based weights ({', '.join(unsafe)}); refusing to load them "
            "because unpickling can run arbitrary code. Convert the model to safetensors, or pass "
            "--allow-unsafe-weights if you trust its source."
        )
    return False


def load_model(model_dir: Path, options: LoadOptions) -> LoadedModel:
    """Load tokenizer and model from ``model_dir`` according to ``options``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if options.dtype not in DTYPES:
        raise ModelLoadError(f"unsupported dtype {options.dtype!r}; choose one of {', '.join(DTYPES)}")
    if options.quantization not in QUANTIZATIONS:
        raise ModelLoadError(f"unsupported quantization {options.quantization!r}")
    if options.quantization == "int8" and (options.device != "cpu" or options.dtype != "float32"):
        raise ModelLoadError("--quantization int8 (dynamic) needs --device cpu and --dtype float32")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda requested but CUDA is not available")

    has_safetensors = check_weights(model_dir, options.allow_unsafe_weights)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, trust_remote_code=options.trust_remote_code
        )
        model_class = AutoModel if options.task == "embed" else AutoModelForCausalLM
        model: Any = model_class.from_pretrained(
            str(model_dir),
            dtype=getattr(torch, options.dtype),
            local_files_only=True,
            trust_remote_code=options.trust_remote_code,
            use_safetensors=has_safetensors,
        )
    except (OSError, ValueError) as exc:
        # transformers reports missing files, bad configs and remote-code refusals this way.
        raise ModelLoadError(f"cannot load {model_dir}: {exc}") from exc
    model = model.to(options.device).eval()
    num_parameters = sum(p.numel() for p in model.parameters())
    if options.quantization == "int8":
        model = quantize_int8(model)

    eos: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos if isinstance(gen_eos, list) else [gen_eos]) + [tokenizer.eos_token_id]:
        if isinstance(value, int) and value not in eos:
            eos.append(value)

    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    tok_max = int(getattr(tokenizer, "model_max_length", 0) or 0)
    if tok_max and tok_max < 10**9:  # transformers uses a huge sentinel when unknown
        max_len = min(max_len, tok_max) if max_len else tok_max
    return LoadedModel(model, tokenizer, eos, max_len or 2048, num_parameters, weights_bytes(model))


def weights_bytes(model: Any) -> int:
    """Bytes held by the model's weights and buffers, quantized packed weights included."""
    import torch

    total = 0

    def add(value: object) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, tuple | list):  # quantized Linear keeps (weight, bias) packed
            for item in value:
                add(item)

    for value in model.state_dict().values():
        add(value)
    return total


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of every ``nn.Linear`` (weights int8, activations float).

    ``torch.ao.quantization`` is deprecated in favour of torchao, which is not in the
    runtime image; it still works in torch 2.13, so we use it and mute the notices.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
