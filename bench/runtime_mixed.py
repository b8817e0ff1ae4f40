"""Benchmark: mixed traffic, shared system prompts and constrained decoding, on the tiny model.

Not a test. One run measures, side by side:

1. **Mixed workload**: 64 requests, prompt lengths uniform in [16, 448] tokens, output lengths
   uniform in [16, 256] (EOS ignored), seeded. Contenders:
   (a) padded static batches of 32 through ``model.generate`` (each batch runs until its
       longest member is done), all at once and under a Poisson arrival stream (a batch starts
       when it is full, or when the last request has arrived, and the previous batch is done;
       its first tokens appear after its prefill, measured by a one-token ``generate``);
   (b) transformers' ``generate_batch`` (all at once only; it takes no arrivals; opt-in with
       ``--with-generate-batch``: on CPU it sizes its paged cache from free memory, 14 GB on the
       development machine, which a shared machine cannot spare);
   (c) Hangar's runtime over HTTP: 64 SSE streams sent at once, and the same Poisson stream.
   Goal: (c) >= 1.5x (a)'s tokens/s and <= 1/5 of its p50 time to first token under Poisson.
2. **Shared system prompt**: 32 requests sharing a 400-token system prompt (distinct questions
   after it), sent at once to a runtime with the prefix cache and to one without
   (``--prefix-cache-mb 0``). Goal: p50 TTFT >= 3x better with the cache.
3. **Constrained decoding**: 32 concurrent requests with a JSON schema vs the same requests
   unconstrained (same max_tokens). Goal: tokens/s no more than 15% lower.

    python bench/runtime_mixed.py [--model-dir DIR] [--rate 4] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from runtime_batching import Server, _dechunk  # noqa: E402

Server.ready_timeout = 600.0  # the 2-core machine is shared: loading can take minutes

from workers.runtime.tinymodel import DATA_DIR, build_tiny_model  # noqa: E402

N_REQUESTS = 64
STATIC_BATCH = 32


def mixed_workload(tokenizer: Any, seed: int) -> list[tuple[list[int], int]]:
    """(prompt ids, output length) pairs: prompts cut from the shipped text."""
    rng = random.Random(seed)
    words = " ".join(p.read_text() for p in sorted(DATA_DIR.glob("*.txt"))).split()
    ids = tokenizer.encode(" ".join(words))
    work = []
    for _ in range(N_REQUESTS):
        length = rng.randint(16, 448)
        start = rng.randrange(0, len(ids) - length)
        work.append((ids[start : start + length], rng.randint(16, 256)))
    return work


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    rng = random.Random(seed + 1)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


# ------------------------------------------------------------------ static batches


def _padded(tokenizer: Any, prompts: list[list[int]]) -> tuple[Any, Any]:
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


def static_batch(model: Any, tokenizer: Any, batch: list[tuple[list[int], int]]) -> tuple[float, float]:
    """(seconds to first token, seconds for the whole batch) of one padded batch."""
    ids, mask = _padded(tokenizer, [p for p, _ in batch])
    longest = max(n for _, n in batch)
    start = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=1, do_sample=False, eos_token_id=-1)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=longest, do_sample=False, eos_token_id=-1)
    return prefill, time.perf_counter() - start


def bench_static(
    model: Any, tokenizer: Any, work: list[tuple[list[int], int]], arrivals: list[float]
) -> dict[str, Any]:
    batches = [work[i : i + STATIC_BATCH] for i in range(0, len(work), STATIC_BATCH)]
    timings = [static_batch(model, tokenizer, b) for b in batches]
    tokens = sum(n for _, n in work)
    burst_elapsed = sum(total for _, total in timings)
    # All at once: every request arrived at 0; batch k starts when batch k-1 is done.
    clock, burst_ttft = 0.0, []
    for (prefill, total), batch in zip(timings, batches, strict=True):
        burst_ttft += [clock + prefill] * len(batch)
        clock += total
    # Poisson: batch k starts when its last member has arrived and the previous batch is done.
    clock, stream_ttft = 0.0, []
    for k, ((prefill, total), batch) in enumerate(zip(timings, batches, strict=True)):
        members = arrivals[k * STATIC_BATCH : k * STATIC_BATCH + len(batch)]
        clock = max(clock, members[-1])
        stream_ttft += [clock + prefill - a for a in members]
        clock += total
    return {
        "burst": {"tok_s": tokens / burst_elapsed, "ttft_p50": statistics.median(burst_ttft), "elapsed": burst_elapsed},
        "poisson": {"tok_s": tokens / clock, "ttft_p50": statistics.median(stream_ttft), "elapsed": clock},
    }


def bench_generate_batch(model: Any, work: list[tuple[list[int], int]]) -> dict[str, Any]:
    """transformers' continuous batching, all at once; each request gets its own length if possible."""
    from transformers import GenerationConfig

    longest = max(n for _, n in work)
    config = GenerationConfig(max_new_tokens=longest, do_sample=False, eos_token_id=-1)
    try:
        start = time.perf_counter()
        model.generate_batch(inputs=[p for p, _ in work], generation_config=config, progress_bar=False)
        elapsed = time.perf_counter() - start
    except Exception as exc:  # report, don't crash: this API is young and may not run on CPU
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    # Every request ran to the longest length (one config for all): count the useful tokens only.
    return {"tok_s": sum(n for _, n in work) / elapsed, "elapsed": elapsed, "note": "all run to the longest length"}


# ------------------------------------------------------------------ runtime over HTTP


async def _stream(url: str, body: dict[str, Any], delay: float, path: str = "/v1/completions") -> dict[str, Any]:
    await asyncio.sleep(delay)
    options = {"model": "tiny", "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    payload = json.dumps({**options, **body}).encode()
    host, port = url.removeprefix("http://").split(":")
    sent = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode(), len(payload)) + payload
    )
    raw: list[bytes] = []
    first = 0.0
    while data := await reader.read(1 << 16):
        raw.append(data)
        if not first:
            buf = b"".join(raw)
            # The first body chunk of a completion stream is its first token (chat sends a role first).
            end = buf.find(b"\r\n\r\n")
            if end >= 0 and buf.count(b"data: ", end) >= (2 if path.endswith("chat/completions") else 1):
                first = time.perf_counter()
    done = time.perf_counter()
    writer.close()
    head, chunked = b"".join(raw).split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace") + chunked.decode(errors="replace")[:500])
    usage = None
    for line in _dechunk(chunked).decode().split("\n"):
        if line.startswith("data: {") and '"usage":{' in line:
            usage = json.loads(line[6:])["usage"]
    assert usage is not None
    return {"sent": sent, "ttft": (first or done) - sent, "done": done, "tokens": usage["completion_tokens"]}


def run_streams(
    url: str, bodies: list[dict[str, Any]], delays: list[float], path: str = "/v1/completions"
) -> dict[str, Any]:
    async def run() -> list[dict[str, Any]]:
        return await asyncio.gather(*(_stream(url, b, d, path) for b, d in zip(bodies, delays, strict=True)))

    start = time.perf_counter()
    results = asyncio.run(run())
    elapsed = max(r["done"] for r in results) - start
    tokens = sum(r["tokens"] for r in results)
    return {"tok_s": tokens / elapsed, "ttft_p50": statistics.median(r["ttft"] for r in results), "elapsed": elapsed}


def bench_hangar_mixed(url: str, work: list[tuple[list[int], int]], arrivals: list[float]) -> dict[str, Any]:
    bodies = [{"prompt": p, "max_tokens": n, "ignore_eos": True} for p, n in work]
    return {
        "burst": run_streams(url, bodies, [0.0] * len(bodies)),
        "poisson": run_streams(url, bodies, arrivals),
    }


def shared_prompt_bodies(tokenizer: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    words = " ".join(p.read_text() for p in sorted(DATA_DIR.glob("*.txt"))).split()
    system = tokenizer.decode(tokenizer.encode(" ".join(words[:600]))[:400])
    warm = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "hello"}], "max_tokens": 1}
    bodies = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": " ".join(words[1000 + 9 * i : 1000 + 9 * i + 9])},
            ],
            "max_tokens": 16,
            "ignore_eos": True,
        }
        for i in range(32)
    ]
    return warm, bodies


def bench_shared_prompt(url: str, tokenizer: Any) -> dict[str, Any]:
    warm, bodies = shared_prompt_bodies(tokenizer)
    run_streams(url, [warm], [0.0], "/v1/chat/completions")  # the system prompt seen once before
    return run_streams(url, bodies, [0.0] * len(bodies), "/v1/chat/completions")


SCHEMA = {
    "type": "object",
    "properties": {
        "notes": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 12},
        "count": {"type": "integer", "minimum": 0, "maximum": 1000},
    },
    "required": ["notes", "count"],
    "additionalProperties": False,
}


def bench_constrained(url: str) -> dict[str, Any]:
    base = [
        {
            "messages": [{"role": "user", "content": f"Notes on harbor {i}"}],
            "max_tokens": 96,
            "temperature": 1.0,
            "seed": i,
        }
        for i in range(32)
    ]
    fmt = {"type": "json_schema", "json_schema": {"name": "notes", "schema": SCHEMA, "strict": True}}
    plain = run_streams(url, [{**b, "ignore_eos": True} for b in base], [0.0] * 32, "/v1/chat/completions")
    constrained = run_streams(url, [{**b, "response_format": fmt} for b in base], [0.0] * 32, "/v1/chat/completions")
    return {"plain": plain, "constrained": constrained}


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "hangar-bench-tiny")
    parser.add_argument("--rate", type=float, default=4.0, help="Poisson arrivals per second")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--with-generate-batch",
        action="store_true",
        help="also run transformers' generate_batch (on CPU it sizes its paged cache from free memory: 14 GB here)",
    )
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # what the runtime uses on 2 cores (one is left for HTTP)
    model_dir = build_tiny_model(args.model_dir, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    work = mixed_workload(tokenizer, args.seed)
    arrivals = poisson_arrivals(len(work), args.rate, args.seed)
    figures: dict[str, Any] = {"rate": args.rate}
    with torch.inference_mode():
        figures["static"] = bench_static(model, tokenizer, work, arrivals)
        progress("static", figures)
    if args.with_generate_batch:
        figures["generate_batch"] = bench_generate_batch(model, work)  # fails inside inference_mode
    else:
        figures["generate_batch"] = {"error": "skipped (--with-generate-batch): it sized its paged cache to 14 GB here"}
    with Server(model_dir, "--max-batch-size", "64") as server:
        figures["hangar"] = bench_hangar_mixed(server.url, work, arrivals)
        progress("hangar", figures)
        figures["shared_cached"] = bench_shared_prompt(server.url, tokenizer)
        progress("shared_cached", figures)
        figures["constrained"] = bench_constrained(server.url)
        progress("constrained", figures)
    with Server(model_dir, "--max-batch-size", "64", "--prefix-cache-mb", "0") as server:
        figures["shared_uncached"] = bench_shared_prompt(server.url, tokenizer)
        progress("shared_uncached", figures)
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def progress(name: str, figures: dict[str, Any]) -> None:
    """Partial figures on stderr as each part finishes (a long run on a busy machine may be cut)."""
    print(f"{name}: {json.dumps(figures[name])}", file=sys.stderr, flush=True)


def print_report(f: dict[str, Any]) -> None:
    s, h = f["static"], f["hangar"]
    print(f"\n## Mixed workload (64 requests, prompts 16-448, outputs 16-256; Poisson {f['rate']}/s)\n")
    print("| contender | burst tok/s | burst p50 TTFT s | Poisson tok/s | Poisson p50 TTFT s |")
    print("|---|---|---|---|---|")
    print(
        f"| static batches of 32 (generate) | {s['burst']['tok_s']:.0f} | {s['burst']['ttft_p50']:.2f} "
        f"| {s['poisson']['tok_s']:.0f} | {s['poisson']['ttft_p50']:.2f} |"
    )
    gb = f["generate_batch"]
    print(f"| generate_batch | {gb.get('tok_s', 0):.0f} | - | - | - | {gb.get('error', gb.get('note', ''))}")
    print(
        f"| Hangar | {h['burst']['tok_s']:.0f} | {h['burst']['ttft_p50']:.2f} "
        f"| {h['poisson']['tok_s']:.0f} | {h['poisson']['ttft_p50']:.2f} |"
    )
    print(
        f"\nHangar / static: burst {h['burst']['tok_s'] / s['burst']['tok_s']:.2f}x tok/s; "
        f"Poisson {h['poisson']['tok_s'] / s['poisson']['tok_s']:.2f}x tok/s (goal >= 1.5x), "
        f"p50 TTFT {h['poisson']['ttft_p50'] / s['poisson']['ttft_p50']:.3f} of static (goal <= 0.2)"
    )
    cached, uncached = f["shared_cached"], f["shared_uncached"]
    print(
        f"\nShared 400-token system prompt, 32 at once: p50 TTFT {uncached['ttft_p50']:.3f}s without the prefix "
        f"cache, {cached['ttft_p50']:.3f}s with it: {uncached['ttft_p50'] / cached['ttft_p50']:.1f}x (goal >= 3x)"
    )
    c = f["constrained"]
    slower = 1 - c["constrained"]["tok_s"] / c["plain"]["tok_s"]
    print(
        f"\nConstrained decoding, 32 concurrent: {c['plain']['tok_s']:.0f} tok/s free, "
        f"{c['constrained']['tok_s']:.0f} tok/s with a JSON schema: {slower * 100:.1f}% slower (goal <= 15%)"
    )


if __name__ == "__main__":
    sys.exit(main())
