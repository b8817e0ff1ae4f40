"""Build a tiny, deterministic Llama-architecture model for tests, quickstart and benchmarks.

No model hub is reachable from Hangar's build and test machines, so the project makes its own
model: a byte-level BPE tokenizer trained with ``tokenizers`` on the English text shipped in
``workers/runtime/data/``, random weights from a small ``LlamaConfig`` (about 3.5 M parameters),
a ChatML-style chat template, all written with ``save_pretrained`` as safetensors so that the
ordinary ``AutoModelForCausalLM`` / ``AutoTokenizer`` loading path is exercised.

The same builder makes a tiny *embedding* model (``--task embed``): the same tokenizer and
layers without the language-model head (``LlamaModel``), with a sentence-transformers style
``1_Pooling/config.json`` (mean pooling) and ``is_matryoshka`` in its config, so the runtime's
``/v1/embeddings`` (``workers.runtime.embeddings``) and its ``dimensions`` are exercised.

Both models have random weights: they answer in plausible tokens of the training text but
not in sentences. The marker file says so (``"random_weights": true``), the catalog reads it
and the dashboard labels such models, so that nobody takes the gibberish for a fault.

Usage::

    python -m workers.runtime.tinymodel OUTDIR [--seed 0] [--task generate|embed]

Building is idempotent: if OUTDIR already holds a complete model built by the same builder
version with the same seed, nothing is done. The build writes into a temporary sibling
directory and renames it into place, so concurrent builders (parallel test sessions) never
see a half-written model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Bump when anything below changes the produced files, so stale builds are replaced.
BUILD_VERSION = 3  # 2 (twice, merged): the random-weights marker, the tools chat template
MARKER_FILE = "hangar-tinymodel.json"
DATA_DIR = Path(__file__).resolve().parent / "data"

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# ChatML: every message is wrapped in <|im_start|>role ... <|im_end|>; the generation prompt
# opens an assistant turn. The model stops at <|im_end|> (listed in generation_config).
# Tools are rendered the way Hermes/Qwen templates do: their JSON signatures in a system turn,
# the assistant's calls as <tool_call>{"name": ..., "arguments": ...}</tool_call> blocks, and
# results as "tool" turns.
CHAT_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\\n# Tools\\nYou may call these functions. For each call, answer '"
    '\'<tool_call>{"name": NAME, "arguments": ARGS}</tool_call>.\\n\' }}'
    "{% for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{% endfor %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{{ '<tool_call>' }}{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}"
    "{{ '</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

VOCAB_SIZE = 2048
MAX_POSITIONS = 2048
HIDDEN_SIZE = 256
TASKS = ("generate", "embed")
POOLING_DIR = "1_Pooling"  # sentence-transformers' layout: where embedding models keep their pooling


def _marker(seed: int, task: str = "generate") -> dict[str, object]:
    return {"builder_version": BUILD_VERSION, "seed": seed, "task": task, "random_weights": True}


def is_complete(outdir: Path, seed: int, task: str = "generate") -> bool:
    """Return True if ``outdir`` holds a finished tiny model built with ``seed`` for ``task``."""
    marker = outdir / MARKER_FILE
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return data == _marker(seed, task) and (outdir / "model.safetensors").is_file()


def _training_text() -> list[str]:
    files = sorted(DATA_DIR.glob("*.txt"))
    if not files:
        raise RuntimeError(f"no training text found in {DATA_DIR}")
    return [f.read_text(encoding="utf-8") for f in files]


def _build_tokenizer(outdir: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[IM_START],
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(outdir))


def _build_model(outdir: Path, seed: int, task: str = "generate") -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, LlamaModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = AutoTokenizer.from_pretrained(str(outdir), local_files_only=True)
    vocab = len(tokenizer)
    token_ids = tokenizer.get_vocab()
    eos_ids = [token_ids[IM_END], token_ids[ENDOFTEXT]]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        # A wider init than the default 0.02 gives peakier logits, so greedy decoding is
        # not decided by near-ties that float rounding in different batch shapes could flip.
        initializer_range=0.1,
        tie_word_embeddings=False,
        bos_token_id=eos_ids[1],
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if task == "embed":
        _save_embedding_model(LlamaModel(config), outdir)
        return
    model = LlamaForCausalLM(config)  # float32 by default
    model.generation_config = GenerationConfig(
        bos_token_id=eos_ids[1],
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(str(outdir), safe_serialization=True)


def _save_embedding_model(model: Any, outdir: Path) -> None:
    # Any output width up to the hidden size may be asked for (``dimensions``), as with
    # Matryoshka-trained models; the runtime reads this flag (vLLM's name for it).
    model.config.is_matryoshka = True
    model.save_pretrained(str(outdir), safe_serialization=True)
    pooling = outdir / POOLING_DIR
    pooling.mkdir()
    (pooling / "config.json").write_text(
        json.dumps({"word_embedding_dimension": HIDDEN_SIZE, "pooling_mode_mean_tokens": True}, indent=2)
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (outdir / "modules.json").write_text(json.dumps(modules, indent=2))


def build_tiny_embedding_model(outdir: Path, seed: int = 0) -> Path:
    """Build the tiny embedding model into ``outdir`` (idempotent) and return its path."""
    return build_tiny_model(outdir, seed, task="embed")


def build_tiny_model(outdir: Path, seed: int = 0, task: str = "generate") -> Path:
    """Build the tiny model into ``outdir`` (idempotent) and return its path.

    ``task`` is ``generate`` (a causal LM with a chat template) or ``embed`` (see the module
    docstring).

    Raises ``FileExistsError`` if ``outdir`` exists, is not empty and was not made by this
    builder: we never delete a directory we did not create.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    outdir = Path(outdir).resolve()
    if is_complete(outdir, seed, task):
        return outdir
    if outdir.exists() and any(outdir.iterdir()) and not (outdir / MARKER_FILE).exists():
        raise FileExistsError(f"{outdir} exists and is not a Hangar tiny model; refusing to overwrite")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.build-", dir=outdir.parent))
    try:
        _build_tokenizer(tmp)
        _build_model(tmp, seed, task)
        # mkdtemp creates 0700; replicas may run as another user over a read-only mount.
        tmp.chmod(0o755)
        for f in tmp.rglob("*"):
            f.chmod(0o755 if f.is_dir() else 0o644)
        # The marker is written last: its presence means every other file is complete.
        (tmp / MARKER_FILE).write_text(json.dumps(_marker(seed, task)))
        if outdir.exists():
            if is_complete(outdir, seed, task):  # another builder finished first
                return outdir
            shutil.rmtree(outdir)  # an older or different-seed build of ours
        try:
            tmp.rename(outdir)
        except OSError:
            if not is_complete(outdir, seed, task):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return outdir


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m workers.runtime.tinymodel", description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=TASKS, default="generate", help="a generative or an embedding model")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.outdir, seed=args.seed, task=args.task)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
