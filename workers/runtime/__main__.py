"""Command line: ``python -m workers.runtime --model DIR --port N [options]``.

Runs one replica: the OpenAI-compatible model server described in ``workers.runtime.server``.
Exit code 0 after a graceful drain, 1 when the model cannot be served, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from workers.runtime.auth import TOKEN_ENV, TokenError, load_token
from workers.runtime.embeddings import POOLINGS, TASKS
from workers.runtime.faults import Faults, rate
from workers.runtime.loader import DTYPES, QUANTIZATIONS, LoadOptions


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests and docs)."""
    p = argparse.ArgumentParser(prog="python -m workers.runtime", description="Hangar model runtime (one replica).")
    p.add_argument("--model", required=True, type=Path, help="model directory (config.json, safetensors, tokenizer)")
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--served-model-name", help="name clients use in 'model' (default: directory name)")
    p.add_argument("--dtype", choices=DTYPES, default="float32")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    p.add_argument("--task", choices=TASKS, default="generate", help="generate (completions) or embed (/v1/embeddings)")
    p.add_argument(
        "--pooling",
        choices=POOLINGS,
        help="embedding pooling (default: the model directory's 1_Pooling/config.json, else mean)",
    )
    p.add_argument("--max-batch-size", type=_positive, default=32)
    p.add_argument("--max-model-len", type=_positive, help="context limit (default: the model's)")
    p.add_argument("--max-queue", type=_positive, default=256, help="waiting requests before 503")
    p.add_argument(
        "--prefix-cache-mb",
        type=int,
        default=256,
        help="memory for the KV of prompt prefixes shared across requests (0: no prefix caching)",
    )
    p.add_argument(
        "--max-kv-tokens",
        type=_positive,
        help="bound of the batched KV cache in token slots (rows x padded length); beyond it admission "
        "waits and the youngest sequences are preempted and recomputed later (default: unbounded)",
    )
    p.add_argument(
        "--prefill-tokens",
        type=_positive,
        default=4096,
        help="padded prompt tokens prefilled in one forward pass (bounds the pause a burst of arrivals "
        "imposes on running streams)",
    )
    p.add_argument(
        "--prefill-chunk",
        type=_positive,
        default=256,
        help="prompts longer than this are prefilled alone, one chunk of this many tokens per step",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=_positive, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for in-flight requests")
    p.add_argument("--allow-unsafe-weights", action="store_true", help="allow pickle-based weights (.bin/.pt)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model directory's Python code")
    p.add_argument("--fault-error-rate", type=rate, default=0.0, help="tests: fraction of API requests answered 500")
    p.add_argument("--fault-delay-rate", type=rate, default=0.0, help="tests: fraction of API requests delayed")
    p.add_argument("--fault-delay-ms", type=float, default=0.0, help="tests: the delay of --fault-delay-rate")
    p.add_argument(
        "--token-file",
        type=Path,
        help=f"file (mode 0600) holding the bearer token that all but /health require (else ${TOKEN_ENV}; "
        "neither: open to anyone)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the server."""
    args = build_parser().parse_args(argv)
    if not (args.device == "cpu" or args.device == "cuda" or args.device.startswith("cuda:")):
        build_parser().error(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
    try:
        token = load_token(args.token_file, os.environ)
    except TokenError as exc:
        build_parser().error(str(exc))
    # Read once; whatever the model's own code may start later does not inherit it.
    os.environ.pop(TOKEN_ENV, None)
    # OpenMP threads that spin while waiting collapse throughput (10x and worse, measured)
    # as soon as anything else wants a core: here the HTTP event loop, and on shared nodes
    # other processes. Must be set before torch is imported; an operator's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Imported late so that --help answers without importing torch.
    from workers.runtime.server import ServerConfig, serve

    model_dir = args.model.resolve()
    config = ServerConfig(
        model_dir=model_dir,
        served_model_name=args.served_model_name or model_dir.name,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_model_len=args.max_model_len,
        max_queue=args.max_queue,
        prefix_cache_mb=max(0, args.prefix_cache_mb),
        max_kv_tokens=args.max_kv_tokens,
        prefill_tokens=args.prefill_tokens,
        prefill_chunk=args.prefill_chunk,
        drain_timeout=args.drain_timeout,
        threads=args.threads,
        token=token,
        pooling=args.pooling,
        faults=Faults(error_rate=args.fault_error_rate, delay_rate=args.fault_delay_rate, delay_ms=args.fault_delay_ms),
        load=LoadOptions(
            task=args.task,
            dtype=args.dtype,
            quantization=args.quantization,
            device=args.device,
            allow_unsafe_weights=args.allow_unsafe_weights,
            trust_remote_code=args.trust_remote_code,
        ),
    )
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
