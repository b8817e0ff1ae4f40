"""GPU check: run the Hangar runtime on a CUDA GPU when one is present, and say so when not.

Not a test (the machines that run ``make test`` have no GPU). On a machine with one, it:

1. loads the tiny model with ``python -m workers.runtime --device cuda --dtype bfloat16`` (the
   same command replicas run) and reports how long the model took to load and become ready;
2. runs the batching benchmark of ``bench/runtime_batching.py`` on the GPU: 32 concurrent SSE
   streams x 128 greedy tokens, at once and staggered, against a padded ``generate`` batch of
   the same prompts in the same process kind (bf16 on the GPU), as a ratio;
3. reports memory: the weights as loaded, ``torch.cuda`` allocated / reserved in the replica
   (its ``/metrics``), the device's total, and the replica's resident memory;
4. embeds 256 texts with the tiny embedding model on the GPU (``--task embed``): inputs/s.

Without a GPU it prints one line starting ``gpu_check: SKIPPED`` with the reason and exits 0
(``--require-gpu``: exits 3 instead, for a GPU CI job that must not skip silently).

    bench/gpu_check [--model-dir DIR] [--tokens 128] [--json OUT] [--require-gpu]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

SKIPPED_EXIT = 0
REQUIRED_MISSING_EXIT = 3


def gpu_presence() -> tuple[bool, str]:
    """Whether torch sees a CUDA device, and a sentence that says what was found."""
    import torch

    smi = shutil.which("nvidia-smi")
    smi_text = "nvidia-smi: absent"
    if smi:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
        smi_text = "nvidia-smi: " + (
            listing.stdout.strip().replace("\n", "; ") or listing.stderr.strip() or "no output"
        )
    build = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none (CPU-only torch)'}"
    if not torch.cuda.is_available():
        return False, f"no CUDA GPU visible to torch ({build}; {smi_text})"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return True, f"{len(names)} GPU(s): {', '.join(names)} ({build})"


def mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


def check_generation(model_dir: Path, tokens: int, device: str) -> dict[str, Any]:
    import runtime_batching as rb
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    prompts = rb.make_prompts(tokenizer, rb.N_PROMPTS)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16).to(device).eval()
    rb.bench_generate_padded(model, tokenizer, prompts[:2], 4)  # CUDA context and kernels, not measured
    t_padded, _ = rb.bench_generate_padded(model, tokenizer, prompts, tokens)
    del model
    torch.cuda.empty_cache()

    started = time.perf_counter()
    with rb.Server(model_dir, "--device", device, "--dtype", "bfloat16") as server:
        ready_s = time.perf_counter() - started
        burst = rb.bench_runtime(server.url, prompts, tokens)
        staggered = rb.bench_runtime(server.url, prompts, tokens, stagger=0.05)
        memory = {
            "weights": server.weights(),
            "gpu_allocated": server.gauge('hangar_runtime_memory_bytes{kind="gpu_allocated"}'),
            "gpu_reserved": server.gauge('hangar_runtime_memory_bytes{kind="gpu_reserved"}'),
            "rss": server.rss(),
        }
    padded_tok_s = len(prompts) * tokens / t_padded
    return {
        "device": device,
        "ready_seconds": ready_s,
        "padded_generate_tok_s": padded_tok_s,
        "runtime_burst_tok_s": burst["tok_s"],
        "runtime_burst_ttft_p50": burst["ttft_p50"],
        "runtime_staggered_tok_s": staggered["tok_s"],
        "runtime_staggered_ttft_p50": staggered["ttft_p50"],
        "ratio_vs_padded": burst["tok_s"] / padded_tok_s,
        "memory": memory,
        "device_total": torch.cuda.get_device_properties(0).total_memory if device != "cpu" else 0,
    }


def check_embeddings(model_dir: Path, device: str) -> dict[str, Any]:
    import httpx
    import runtime_batching as rb

    texts = [f"harbor record {i}: the tide went out at {i % 12} o'clock" for i in range(256)]
    with rb.Server(model_dir, "--device", device, "--task", "embed") as server:
        body = {"model": "tiny", "input": texts[:8], "encoding_format": "float"}
        httpx.post(server.url + "/v1/embeddings", json=body, timeout=120).raise_for_status()
        started = time.perf_counter()
        answer = httpx.post(
            server.url + "/v1/embeddings", json={**body, "input": texts}, timeout=300
        ).raise_for_status()
        elapsed = time.perf_counter() - started
    return {
        "inputs": len(texts),
        "seconds": elapsed,
        "inputs_per_s": len(texts) / elapsed,
        "dimensions": len(answer.json()["data"][0]["embedding"]),
    }


def print_report(presence: str, gen: dict[str, Any], emb: dict[str, Any], tokens: int) -> None:
    import runtime_batching as rb

    mem = gen["memory"]
    print(f"gpu_check: RAN on {presence}")
    print()
    print(f"| measure (tiny model, bf16, {rb.N_PROMPTS} prompts x {tokens} tokens) | value |")
    print("|---|---:|")
    print(f"| load to ready (`--device {gen['device']} --dtype bfloat16`) | {gen['ready_seconds']:.1f} s |")
    print(f"| padded `generate` batch, in process | {gen['padded_generate_tok_s']:,.0f} tok/s |")
    print(
        f"| runtime, 32 concurrent streams | {gen['runtime_burst_tok_s']:,.0f} tok/s "
        f"({gen['ratio_vs_padded']:.2f}x padded), TTFT p50 {gen['runtime_burst_ttft_p50'] * 1000:.0f} ms |"
    )
    print(
        f"| runtime, arrivals 50 ms apart | {gen['runtime_staggered_tok_s']:,.0f} tok/s, "
        f"TTFT p50 {gen['runtime_staggered_ttft_p50'] * 1000:.0f} ms |"
    )
    print(f"| weights as loaded | {mib(mem['weights'])} |")
    print(f"| GPU allocated / reserved (replica) | {mib(mem['gpu_allocated'])} / {mib(mem['gpu_reserved'])} |")
    print(f"| GPU total | {mib(gen['device_total'])} |")
    print(f"| replica resident memory | {mib(mem['rss'])} |")
    print(f"| embeddings ({emb['inputs']} texts, {emb['dimensions']} dims) | {emb['inputs_per_s']:,.0f} inputs/s |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "hangar-bench-tiny")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--require-gpu", action="store_true", help=f"exit {REQUIRED_MISSING_EXIT} instead of skipping")
    parser.add_argument(
        "--check-script-on-cpu",
        action="store_true",
        help="run every step on the CPU instead (checks the script itself where no GPU is; not GPU figures)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    present, presence = gpu_presence()
    device = "cuda"
    if args.check_script_on_cpu:
        present, presence, device = (
            True,
            "the CPU (--check-script-on-cpu: a check of this script, not GPU figures)",
            "cpu",
        )
    if not present:
        print(f"gpu_check: SKIPPED: {presence}. Nothing was measured; run it on a machine with an NVIDIA GPU.")
        return REQUIRED_MISSING_EXIT if args.require_gpu else SKIPPED_EXIT
    from workers.runtime.tinymodel import build_tiny_embedding_model, build_tiny_model

    model_dir = build_tiny_model(args.model_dir)
    embed_dir = build_tiny_embedding_model(args.model_dir.with_name(args.model_dir.name + "-embed"))
    gen = check_generation(model_dir, args.tokens, device)
    emb = check_embeddings(embed_dir, device)
    print_report(presence, gen, emb, args.tokens)
    if args.json:
        args.json.write_text(json.dumps({"gpu": presence, "generation": gen, "embeddings": emb}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
