"""Benchmark: mixed traffic, shared system prompts, constrained decoding and scheduling, tiny model.

Not a test. The parts (``--only PART``, repeatable; the first four run by default):

1. ``mixed``: 64 requests, prompt lengths uniform in [16, 448] tokens, output lengths uniform
   in [16, 256] (EOS ignored), seeded, all at once ("burst") and as a Poisson stream. Contenders:
   (a) padded static batches of 32 through ``model.generate`` (each batch runs until its longest
       member is done; under Poisson a batch starts when its last member has arrived and the
       previous batch is done; its first tokens appear after its prefill, measured by a
       one-token ``generate``);
   (c) Hangar's runtime over HTTP: 64 SSE streams, at once and as the same Poisson stream.
   Goal: (c) >= 1.5x (a)'s tokens/s and <= 1/5 of its p50 time to first token under Poisson.
2. ``generate-batch``: (b) transformers' continuous batching, one request per prompt with its own
   ``max_new_tokens`` (``continuous_batching_context_manager`` + ``add_request``), at once and as
   the Poisson stream, in a child process whose peak RSS is the memory figure. Left to itself
   it sizes its paged KV cache from free memory (``max_memory_percent``, 0.6 of free RAM on
   CPU): 14 GB on the development machine. ``ContinuousBatchingConfig(num_blocks=...)`` fixes
   the cache instead: pages of 64 tokens, exactly as many as the workload needs (434), and
   ``max_batch_tokens=2048``, because its attention mask is [batch tokens, cache + batch tokens]
   floats (1.2 GB at 8192). transformers 5.23.0.
3. ``shared``: 32 requests sharing a 400-token system prompt, at once, to a runtime with the
   prefix cache and to one without (``--prefix-cache-mb 0``). Goal: p50 TTFT >= 3x better.
4. ``constrained``: 32 concurrent chat requests with a JSON schema against the same requests
   free, each producing as many tokens as its constrained twin (see ``bench_constrained``),
   ``--repeat`` rounds over HTTP plus twice as many in-process. Goal: at most 15% slower.
5. ``scheduling`` (opt-in): the mixed workload against several ``--prefill-tokens`` /
   ``--prefill-chunk`` settings (``SCHEDULES``), ``--repeat`` rounds each.

    python bench/runtime_mixed.py [--only PART ...] [--repeat 3] [--rate 4 --rate 8 ...] [--json OUT]
    python bench/runtime_mixed.py --report OUT   # the report of a saved run again

The mixed part runs static batches and Hangar alternately, ``--repeat`` rounds, medians; the
runtime runs without its prefix cache there, since every round sends the same prompts (before
this was noticed, the Poisson streams and later rounds were served partly from the cache the
burst had filled). Each Poisson rate's row also gives the bound on that ratio: no server finishes
before the last request arrives, so static's elapsed time over that arrival is the most any
contender can reach against static.

Figures of 2026-11-30 on the 2-core development machine, quiet (load under 2), commit fe81452:

``python bench/runtime_mixed.py --only mixed --repeat 3`` (static 1 thread, Hangar
``--max-batch-size 64 --prefix-cache-mb 0``):

| arrivals | last arrival s | static tok/s | Hangar tok/s | Hangar / static | bound | TTFT p50 Hangar / static |
|---|---|---|---|---|---|---|
| all at once | 0 | 690 | 1138 | 1.65x | - | 0.217 (1.25 s / 5.75 s) |
| Poisson 4/s | 14.7 | 432 | 592 | 1.37x | 1.45x | 0.011 |
| Poisson 8/s | 7.3 | 556 | 980 | 1.76x | 2.26x | 0.018 |
| Poisson 16/s | 3.7 | 616 | 1096 | 1.78x | 4.08x | 0.024 |

At 4/s the goal of 1.5x is above what any server could reach (1.45x): Hangar finishes 0.9 s
after the last arrival. The same run before the cache layers kept spare columns (commit c1984b1,
load under 1): burst 1.45x (622 / 905 tok/s), Poisson 1.38x / 1.63x / 1.60x at 4 / 8 / 16.

``--only generate-batch --only shared --only constrained --repeat 3``: generate_batch (434
pages of 64, ``max_batch_tokens=2048``) 234 tok/s at once (p50 TTFT 7.17 s), 252 tok/s under
Poisson 4/s (p50 TTFT 1.00 s), peak RSS 876 MiB (420 MiB before). Shared 400-token system
prompt, 32 at once: p50 TTFT 1.229 s without the prefix cache, 0.230 s with it (5.3x).
Constrained decoding: 1793 tok/s with the schema, 1775 free with the same lengths (-1.0%:
within noise), runtime CPU per token -1.0%, in-process +1.7% (3841 tokens).

Constrained decoding before and after the mask rework (one batched fill into a reused bitmask,
numpy on CPU instead of xgrammar's CPU kernel and a per-row index_fill): the first version of
this part compared unequal lengths and reported 15.7% slower. With equal lengths,
``--only constrained --repeat 4`` run twice each, alternately, at load 0.2-2 (old code: commit
86160f8 with this file): wall-clock 9.8% / 5.4% slower before, -2.2% / 4.7% after; runtime CPU
per token +9.3% / +5.8% before, -0.7% / +5.1% after; in-process +6.0% / +3.9% before, +5.9% /
+3.9% after. The end-to-end difference is within this machine's noise; timed directly, the
mask costs 0.62 ms per decode step before and 0.30 ms after (18 rows on average, load ~2), 2.5
and 1.15 ms under load 8 (32 rows; after, xgrammar's own fill is about half of it); the grammar's
whole share (fill, mask, accept) is about 4% of the engine's time (cProfile).

Scheduling, ``--only scheduling --repeat 3`` (load 0.2-0.8), medians; TTFT in seconds. Each
setting's fresh runtime had its prefix cache on: the burst columns (run first) are clean, the
Poisson columns were served partly from the cache the burst had filled:

| setting | burst tok/s | burst TTFT p50 / p90 | Poisson tok/s | Poisson TTFT p50 / p90 | Poisson s/token p50 |
|---|---|---|---|---|---|
| prefill 8192 / chunk 512 (default before) | 937 | 2.71 / 4.31 | 596 | 0.024 / 0.036 | 0.0077 |
| prefill 2048 / chunk 512 | 874 | 2.07 / 3.58 | 593 | 0.024 / 0.033 | 0.0080 |
| prefill 4096 / chunk 256 (default now) | 949 | 1.32 / 4.18 | 581 | 0.026 / 0.035 | 0.0089 |
| prefill 8192 / chunk 256 | 883 | 1.61 / 4.65 | 591 | 0.024 / 0.036 | 0.0078 |
| prefill 16384 / chunk 512 | 810 | 3.16 / 5.15 | 594 | 0.024 / 0.038 | 0.0091 |

4096 / 256 halves the burst's median TTFT (1.30-1.33 s in each round against 2.63-2.78 s; an
earlier two-round run agreed: 1.57 s against 3.18 s) with the same tokens/s and p90; the
Poisson stream is arrival-bound and does not tell the settings apart (its s/token moved
between rounds by more than between settings). Prompts over the chunk size are prefilled
alone, chunk by chunk, so the short ones are batched with little padding and start sooner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
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
    model: Any, tokenizer: Any, work: list[tuple[list[int], int]], streams: dict[float, list[float]]
) -> dict[str, Any]:
    """One measured pass of both batches; each Poisson stream is scheduled on those timings."""
    batches = [work[i : i + STATIC_BATCH] for i in range(0, len(work), STATIC_BATCH)]
    timings = [static_batch(model, tokenizer, b) for b in batches]
    tokens = sum(n for _, n in work)
    burst_elapsed = sum(total for _, total in timings)
    # All at once: every request arrived at 0; batch k starts when batch k-1 is done.
    clock, burst_ttft = 0.0, []
    for (prefill, total), batch in zip(timings, batches, strict=True):
        burst_ttft += [clock + prefill] * len(batch)
        clock += total
    figures: dict[str, Any] = {
        "burst": {"tok_s": tokens / burst_elapsed, "ttft_p50": statistics.median(burst_ttft), "elapsed": burst_elapsed}
    }
    # Poisson: batch k starts when its last member has arrived and the previous batch is done.
    for rate, arrivals in streams.items():
        clock, stream_ttft = 0.0, []
        for k, ((prefill, total), batch) in enumerate(zip(timings, batches, strict=True)):
            members = arrivals[k * STATIC_BATCH : k * STATIC_BATCH + len(batch)]
            clock = max(clock, members[-1])
            stream_ttft += [clock + prefill - a for a in members]
            clock += total
        figures[f"poisson@{rate:g}"] = {
            "tok_s": tokens / clock,
            "ttft_p50": statistics.median(stream_ttft),
            "elapsed": clock,
        }
    return figures


# transformers' paged cache for generate_batch: pages of GB_PAGE tokens, exactly as many as the
# workload needs (every request's prompt + output, rounded up to pages), so all 64 requests fit at
# once, as they do in the other contenders. Unset, it takes 60% of the machine's free memory.
GB_PAGE = 64
# Tokens per forward pass. Its attention mask is [tokens, cache + tokens] floats: at 8192 that
# alone was 1.2 GB (peak RSS 1865 MiB, 136 tok/s); 2048 peaked at 880 MiB and ran faster (200
# tok/s), 1024 at 758 MiB (154 tok/s), all in one quiet-ish hour on the development machine.
GB_BATCH_TOKENS = 2048


def bench_generate_batch(model_dir: Path, work: list[tuple[list[int], int]], arrivals: list[float]) -> dict[str, Any]:
    """transformers' continuous batching, in a child process whose peak RSS is the memory figure."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        try:
            return pool.apply(_generate_batch_child, (str(model_dir), work, arrivals))
        except Exception as exc:  # report, don't crash: this API is young
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _generate_batch_child(model_dir: str, work: list[tuple[list[int], int]], arrivals: list[float]) -> dict[str, Any]:
    import threading

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, ContinuousBatchingConfig, GenerationConfig

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    blocks = sum(-(-(len(p) + n) // GB_PAGE) for p, n in work)
    figures: dict[str, Any] = {
        "transformers": transformers.__version__,
        "config": {"page_size": GB_PAGE, "num_blocks": blocks, "max_batch_tokens": GB_BATCH_TOKENS},
        "rss_before": _rss("VmRSS"),
    }
    generation = GenerationConfig(do_sample=False, eos_token_id=-1, max_new_tokens=max(n for _, n in work))
    for name, delays in (("burst", [0.0] * len(work)), ("poisson", arrivals)):
        cache = ContinuousBatchingConfig(page_size=GB_PAGE, num_blocks=blocks, max_batch_tokens=GB_BATCH_TOKENS)
        with model.continuous_batching_context_manager(
            generation_config=generation, continuous_batching_config=cache, block=True, timeout=5
        ) as manager:
            sent: dict[str, float] = {}
            start = time.perf_counter()

            feeder = threading.Thread(target=_feed, args=(manager, work, delays, start, sent))
            feeder.start()
            results: dict[str, Any] = {}
            while len(results) < len(work):
                result = manager.get_result(timeout=1)
                if result is not None and result.is_finished():
                    results[result.request_id] = result
                elif result is None and not manager.is_running():
                    raise RuntimeError("generate_batch's thread stopped")
            feeder.join()
        errors = [r.error for r in results.values() if r.error]
        if errors:
            raise RuntimeError(errors[0])
        tokens = sum(len(r.generated_tokens) for r in results.values())
        if tokens != sum(n for _, n in work):
            raise RuntimeError(f"generate_batch produced {tokens} tokens, expected {sum(n for _, n in work)}")
        elapsed = max(r.timestamps[-1] for r in results.values()) - start
        ttft = [r.timestamps[0] - sent[rid] for rid, r in results.items()]
        figures[name] = {"tok_s": tokens / elapsed, "ttft_p50": statistics.median(ttft), "elapsed": elapsed}
    figures["peak_rss"] = _rss("VmHWM")
    return figures


def _feed(
    manager: Any, work: list[tuple[list[int], int]], delays: list[float], start: float, sent: dict[str, float]
) -> None:
    """Hand the requests to generate_batch's manager at their arrival times."""
    for i, (prompt, n) in enumerate(work):
        time.sleep(max(0.0, start + delays[i] - time.perf_counter()))
        sent[f"r{i}"] = time.perf_counter()
        manager.add_request(prompt, request_id=f"r{i}", max_new_tokens=n, record_timestamps=True, eos_token_id=-1)


def _rss(field: str) -> int:
    """Bytes of this process's resident set (VmRSS) or its peak (VmHWM), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


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
    tokens = usage["completion_tokens"]
    tpot = (done - first) / (tokens - 1) if first and tokens > 1 else None
    return {"sent": sent, "ttft": (first or done) - sent, "done": done, "tokens": tokens, "tpot": tpot}


def run_streams(
    url: str, bodies: list[dict[str, Any]], delays: list[float], path: str = "/v1/completions"
) -> dict[str, Any]:
    async def run() -> list[dict[str, Any]]:
        return await asyncio.gather(*(_stream(url, b, d, path) for b, d in zip(bodies, delays, strict=True)))

    start = time.perf_counter()
    results = asyncio.run(run())
    elapsed = max(r["done"] for r in results) - start
    tokens = sum(r["tokens"] for r in results)
    tpots = [r["tpot"] for r in results if r["tpot"] is not None]
    return {
        "tok_s": tokens / elapsed,
        "ttft_p50": statistics.median(r["ttft"] for r in results),
        "ttft_p90": statistics.quantiles([r["ttft"] for r in results], n=10)[-1] if len(results) > 1 else 0.0,
        "tpot_p50": statistics.median(tpots) if tpots else None,  # seconds per token after the first
        "elapsed": elapsed,
        "tokens_each": [r["tokens"] for r in results],
    }


def bench_hangar_mixed(
    url: str, work: list[tuple[list[int], int]], streams: dict[float, list[float]]
) -> dict[str, Any]:
    bodies = [{"prompt": p, "max_tokens": n, "ignore_eos": True} for p, n in work]
    figures = {"burst": run_streams(url, bodies, [0.0] * len(bodies))}
    for rate, arrivals in streams.items():
        figures[f"poisson@{rate:g}"] = run_streams(url, bodies, arrivals)
    return figures


def bench_mixed(
    model_dir: Path, tokenizer: Any, work: list[tuple[list[int], int]], streams: dict[float, list[float]], rounds: int
) -> dict[str, Any]:
    """Static batches and Hangar, alternately, ``rounds`` times; medians of each figure.

    One process holds the static contender's model while the runtime (its own process) waits
    idle, and the other way round: they never compete for the two cores. The runtime runs
    without its prefix cache (see below); ``shared`` measures the cache.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    runs: dict[str, list[dict[str, Any]]] = {"static": [], "hangar": []}
    # Without the prefix cache: every round (and the Poisson streams after the burst) sends the
    # same prompts, which the cache would serve from the earlier runs (static gets no such help).
    with Server(model_dir, "--max-batch-size", "64", "--prefix-cache-mb", "0") as server:
        for i in range(rounds):
            with torch.inference_mode():
                runs["static"].append(bench_static(model, tokenizer, work, streams))
            runs["hangar"].append(bench_hangar_mixed(server.url, work, streams))
            for name in runs:
                print(f"mixed round {i + 1}, {name}: {json.dumps(_brief(runs[name][-1]))}", file=sys.stderr, flush=True)
        rss = server.rss()
    out: dict[str, Any] = {"rounds": rounds}
    for name, results in runs.items():
        out[name] = {
            mode: {key: statistics.median(r[mode][key] for r in results) for key in ("tok_s", "ttft_p50", "elapsed")}
            for mode in results[0]
        }
        out[name]["each"] = [{mode: _brief(r[mode]) for mode in r} for r in results]
    out["hangar"]["rss"] = rss
    out["last_arrival"] = {f"{rate:g}": arrivals[-1] for rate, arrivals in streams.items()}
    return out


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


# At least 8 notes of 8 characters or more: answers of about 100-200 tokens, so that a run is
# mostly decode steps (where the mask is paid) rather than prefill and HTTP.
SCHEMA = {
    "type": "object",
    "properties": {
        "notes": {
            "type": "array",
            "items": {"type": "string", "minLength": 8, "maxLength": 24},
            "minItems": 8,
            "maxItems": 12,
        },
        "count": {"type": "integer", "minimum": 0, "maximum": 1000},
    },
    "required": ["notes", "count"],
    "additionalProperties": False,
}


MAX_TOKENS = 400  # above what the schema needs in practice (a cut answer would still be matched)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_constrained(server: Server, repeat: int) -> dict[str, Any]:
    """Tokens/s with the JSON schema vs free text producing the same number of tokens per request.

    A constrained answer ends when its JSON document is complete, so the free run asks each
    request for exactly as many tokens as its constrained twin produced (``max_tokens`` = that
    length, EOS ignored): same prompts, same batch, same tokens; the only difference is the
    grammar. The first version of this benchmark gave both runs the same ``max_tokens`` (96):
    the free answers all ran to 96 tokens while the constrained ones stopped after 20-40, so it
    also measured a prefill spread over fewer tokens and a batch emptying early, which are not
    the mask's cost. The schema is compiled by one warm-up request first (a replica compiles a
    schema once, then caches it). Rounds alternate which run goes first.
    """
    base = [
        {
            "messages": [{"role": "user", "content": f"Notes on harbor {i}"}],
            "max_tokens": MAX_TOKENS,
            "temperature": 1.0,
            "seed": i,
        }
        for i in range(32)
    ]
    fmt = {"type": "json_schema", "json_schema": {"name": "notes", "schema": SCHEMA, "strict": True}}
    chat = "/v1/chat/completions"
    url, pid = server.url, server.proc.pid
    constrained_bodies = [{**b, "response_format": fmt} for b in base]
    run_streams(url, constrained_bodies[:1], [0.0], chat)  # compiles the schema
    rounds: list[dict[str, Any]] = []
    lengths: list[int] = []
    for i in range(repeat):
        one: dict[str, Any] = {}
        order = ["constrained", "matched"] if i % 2 == 0 or not lengths else ["matched", "constrained"]
        for name in order:
            cpu = cpu_seconds(pid)
            if name == "constrained":
                one[name] = run_streams(url, constrained_bodies, [0.0] * 32, chat)
                lengths = one[name]["tokens_each"]
            else:
                matched = [{**b, "max_tokens": n, "ignore_eos": True} for b, n in zip(base, lengths, strict=True)]
                one[name] = run_streams(url, matched, [0.0] * 32, chat)
            one[name]["cpu_ms_per_token"] = (cpu_seconds(pid) - cpu) * 1000 / sum(one[name]["tokens_each"])
        one["slower"] = 1 - one["constrained"]["tok_s"] / one["matched"]["tok_s"]
        one["cpu_more"] = one["constrained"]["cpu_ms_per_token"] / one["matched"]["cpu_ms_per_token"] - 1
        rounds.append(one)
        print(
            f"constrained round {i + 1}: {one['constrained']['tok_s']:.0f} tok/s with the schema, "
            f"{one['matched']['tok_s']:.0f} free (same lengths): {one['slower'] * 100:.1f}% slower; CPU "
            f"{one['constrained']['cpu_ms_per_token']:.3f} vs {one['matched']['cpu_ms_per_token']:.3f} ms/token: "
            f"{one['cpu_more'] * 100:+.1f}%",
            file=sys.stderr,
            flush=True,
        )

    def median(key: str, sub: str | None = None) -> float:
        return statistics.median(r[key][sub] if sub else r[key] for r in rounds)

    return {
        "rounds": len(rounds),
        "constrained_tok_s": median("constrained", "tok_s"),
        "matched_tok_s": median("matched", "tok_s"),
        "slower": median("slower"),
        "constrained_cpu_ms_per_token": median("constrained", "cpu_ms_per_token"),
        "matched_cpu_ms_per_token": median("matched", "cpu_ms_per_token"),
        "cpu_more": median("cpu_more"),
        "tokens": sum(rounds[-1]["constrained"]["tokens_each"]),
        "each": [(r["slower"], r["cpu_more"]) for r in rounds],
    }


def bench_constrained_engine(model_dir: Path, repeat: int) -> dict[str, Any]:
    """The same comparison without HTTP: the engine in this process, CPU seconds of this thread.

    ``Engine.generate`` runs the 32 requests on the calling thread, so ``time.thread_time`` is
    the scheduler's own CPU time (model, sampling, masks), untouched by the HTTP side and only
    slightly by other processes: the steadiest figure of the mask's cost on a shared machine.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workers.runtime.constraints import GrammarFactory
    from workers.runtime.engine import Engine, GenerationRequest
    from workers.runtime.sampling import SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True).eval()
    eos = [tokenizer.eos_token_id]
    factory = GrammarFactory(tokenizer, int(model.config.vocab_size), eos)
    engine = Engine(model, tokenizer, max_batch_size=64, eos_token_ids=eos)
    engine.warmup()
    prompts = [
        tokenizer.encode(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": f"Notes on harbor {i}"}], tokenize=False, add_generation_prompt=True
            ),
            add_special_tokens=False,
        )
        for i in range(32)
    ]

    def run(lengths: list[int] | None) -> tuple[list[int], float]:
        requests = [
            GenerationRequest(
                prompt,
                max_tokens=lengths[i] if lengths else MAX_TOKENS,
                sampling=SamplingParams(temperature=1.0, seed=i),
                ignore_eos=lengths is not None,
                constraint=None if lengths else factory.json_schema(SCHEMA, strict=True),
            )
            for i, prompt in enumerate(prompts)
        ]
        start = time.thread_time()
        results = engine.generate(requests)
        return [len(ids) for ids, _ in results], time.thread_time() - start

    ratios, per_token = [], []
    with torch.inference_mode():
        lengths, _ = run(None)  # warm-up: compiles the schema
        for i in range(repeat):
            if i % 2:
                _, free = run(lengths)
                lengths, constrained = run(None)
            else:
                lengths, constrained = run(None)
                _, free = run(lengths)
            tokens = sum(lengths)
            ratios.append(constrained / free - 1)
            per_token.append((constrained * 1000 / tokens, free * 1000 / tokens))
            print(
                f"constrained engine round {i + 1}: {per_token[-1][0]:.3f} vs {per_token[-1][1]:.3f} CPU ms/token: "
                f"{ratios[-1] * 100:+.1f}%",
                file=sys.stderr,
                flush=True,
            )
    return {
        "rounds": repeat,
        "constrained_cpu_ms_per_token": statistics.median(c for c, _ in per_token),
        "free_cpu_ms_per_token": statistics.median(f for _, f in per_token),
        "cpu_more": statistics.median(ratios),
        "each": ratios,
    }


# Scheduling settings tried on the mixed workload (``--only scheduling``): the runtime's flags.
SCHEDULES: dict[str, list[str]] = {
    "prefill 8192 / chunk 512 (default before)": ["--prefill-tokens", "8192", "--prefill-chunk", "512"],
    "prefill 2048 / chunk 512": ["--prefill-tokens", "2048", "--prefill-chunk", "512"],
    "prefill 4096 / chunk 256 (default)": ["--prefill-tokens", "4096", "--prefill-chunk", "256"],
    "prefill 8192 / chunk 256": ["--prefill-tokens", "8192", "--prefill-chunk", "256"],
    "prefill 16384 / chunk 512": ["--prefill-tokens", "16384", "--prefill-chunk", "512"],
}


def bench_scheduling(
    model_dir: Path, work: list[tuple[list[int], int]], arrivals: list[float], repeat: int
) -> dict[str, Any]:
    """The mixed workload against each setting; rounds go through the settings in turn (medians)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEDULES}
    for i in range(repeat):
        for name, flags in SCHEDULES.items():
            with Server(model_dir, "--max-batch-size", "64", *flags) as server:
                figures = bench_hangar_mixed(server.url, work, {0.0: arrivals})
                runs[name].append({"burst": figures["burst"], "poisson": figures["poisson@0"]})
            print(
                f"scheduling round {i + 1}, {name}: {json.dumps(_brief(runs[name][-1]))}", file=sys.stderr, flush=True
            )
    out: dict[str, Any] = {}
    keys = ("tok_s", "ttft_p50", "ttft_p90", "tpot_p50")
    for name, results in runs.items():
        out[name] = {
            mode: {key: statistics.median(r[mode][key] for r in results) for key in keys}
            for mode in ("burst", "poisson")
        }
    return out


def _brief(figures: dict[str, Any]) -> dict[str, Any]:
    """Figures without the per-request lists, rounded, for progress lines."""
    if not isinstance(figures, dict):
        return figures
    return {
        k: (round(v, 4) if isinstance(v, float) else _brief(v))
        for k, v in figures.items()
        if k not in ("tokens_each", "each")
    }


# ------------------------------------------------------------------ main


PARTS = ("mixed", "generate-batch", "shared", "constrained", "scheduling")
DEFAULT_PARTS = ("mixed", "generate-batch", "shared", "constrained")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "hangar-bench-tiny")
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="Poisson arrivals per second (repeatable; default 4, 8 and 16; the first also drives "
        "generate-batch and scheduling)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help=f"run only these parts (repeatable; default: {', '.join(DEFAULT_PARTS)}; 'scheduling' is opt-in)",
    )
    parser.add_argument("--report", type=Path, help="only print the report of an earlier run's --json file")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of the mixed, constrained and scheduling parts (medians)"
    )
    args = parser.parse_args()
    if args.report:
        print_report(json.loads(args.report.read_text()))
        return 0
    parts = set(args.only or DEFAULT_PARTS)

    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(1)  # what the runtime uses on 2 cores (one is left for HTTP)
    model_dir = build_tiny_model(args.model_dir, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    work = mixed_workload(tokenizer, args.seed)
    rates = args.rate or [4.0, 8.0, 16.0]
    streams = {rate: poisson_arrivals(len(work), rate, args.seed) for rate in rates}
    arrivals = streams[rates[0]]
    figures: dict[str, Any] = {"rate": rates[0], "rates": rates, "parts": sorted(parts)}
    if "mixed" in parts:
        figures["mixed"] = bench_mixed(model_dir, tokenizer, work, streams, args.repeat)
    if "generate-batch" in parts:
        figures["generate_batch"] = bench_generate_batch(model_dir, work, arrivals)
        progress("generate_batch", figures)
    run_runtime_parts(figures, parts, model_dir, tokenizer, work, arrivals, args.repeat)
    print_report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def run_runtime_parts(
    figures: dict[str, Any],
    parts: set[str],
    model_dir: Path,
    tokenizer: Any,
    work: list[tuple[list[int], int]],
    arrivals: list[float],
    repeat: int,
) -> None:
    """The parts that measure Hangar's runtime, each adding its figures to ``figures``."""
    if parts & {"shared", "constrained"}:
        with Server(model_dir, "--max-batch-size", "64") as server:
            if "shared" in parts:
                figures["shared_cached"] = bench_shared_prompt(server.url, tokenizer)
                progress("shared_cached", figures)
            if "constrained" in parts:
                figures["constrained"] = bench_constrained(server, repeat)
                progress("constrained", figures)
    if "constrained" in parts:
        figures["constrained_engine"] = bench_constrained_engine(model_dir, 2 * repeat)
        progress("constrained_engine", figures)
    if "shared" in parts:
        with Server(model_dir, "--max-batch-size", "64", "--prefix-cache-mb", "0") as server:
            figures["shared_uncached"] = bench_shared_prompt(server.url, tokenizer)
            progress("shared_uncached", figures)
    if "scheduling" in parts:
        figures["scheduling"] = bench_scheduling(model_dir, work, arrivals, repeat)


def progress(name: str, figures: dict[str, Any]) -> None:
    """Partial figures on stderr as each part finishes (a long run on a busy machine may be cut)."""
    print(f"{name}: {json.dumps(_brief(figures[name]))}", file=sys.stderr, flush=True)


def print_report(f: dict[str, Any]) -> None:
    if "mixed" in f:
        _report_mixed(f)
    elif "generate_batch" in f:
        print(f"\ngenerate_batch: {json.dumps(_brief(f['generate_batch']))}")
    if "shared_cached" in f:
        cached, uncached = f["shared_cached"], f["shared_uncached"]
        print(
            f"\nShared 400-token system prompt, 32 at once: p50 TTFT {uncached['ttft_p50']:.3f}s without the prefix "
            f"cache, {cached['ttft_p50']:.3f}s with it: {uncached['ttft_p50'] / cached['ttft_p50']:.1f}x (goal >= 3x)"
        )
    if "constrained" in f:
        c = f["constrained"]
        print(
            f"\nConstrained decoding, 32 concurrent, median of {c['rounds']} rounds: "
            f"{c['constrained_tok_s']:.0f} tok/s with a JSON schema, {c['matched_tok_s']:.0f} tok/s free with the "
            f"same lengths: {c['slower'] * 100:.1f}% slower (goal <= 15%); runtime CPU per token "
            f"{c['constrained_cpu_ms_per_token']:.3f} vs {c['matched_cpu_ms_per_token']:.3f} ms: "
            f"{c['cpu_more'] * 100:+.1f}%; {c['tokens']} tokens per run"
        )
        e = f["constrained_engine"]
        print(
            f"Without HTTP (the engine in-process, its thread's CPU time), median of {e['rounds']} rounds: "
            f"{e['constrained_cpu_ms_per_token']:.3f} vs {e['free_cpu_ms_per_token']:.3f} ms/token: "
            f"{e['cpu_more'] * 100:+.1f}%"
        )
    if "scheduling" in f:
        print(f"\n## Scheduling settings, mixed workload (Poisson {f['rate']}/s), medians\n")
        print(
            "| setting | burst tok/s | burst TTFT p50 / p90 s | burst s/token p50 | Poisson tok/s "
            "| Poisson TTFT p50 / p90 s | Poisson s/token p50 |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, r in f["scheduling"].items():
            b, p = r["burst"], r["poisson"]
            print(
                f"| {name} | {b['tok_s']:.0f} | {b['ttft_p50']:.2f} / {b['ttft_p90']:.2f} | {b['tpot_p50']:.4f} "
                f"| {p['tok_s']:.0f} | {p['ttft_p50']:.3f} / {p['ttft_p90']:.3f} | {p['tpot_p50']:.4f} |"
            )


def _report_mixed(f: dict[str, Any]) -> None:
    m = f["mixed"]
    s, h = m["static"], m["hangar"]
    first = f"poisson@{f['rate']:g}"
    print(f"\n## Mixed workload (64 requests, prompts 16-448, outputs 16-256), medians of {m['rounds']} rounds\n")
    print(f"| contender | burst tok/s | burst p50 TTFT s | Poisson {f['rate']:g}/s tok/s | its p50 TTFT s | peak RSS |")
    print("|---|---|---|---|---|---|")
    print(
        f"| static batches of 32 (generate) | {s['burst']['tok_s']:.0f} | {s['burst']['ttft_p50']:.2f} "
        f"| {s[first]['tok_s']:.0f} | {s[first]['ttft_p50']:.2f} | - |"
    )
    gb = f.get("generate_batch", {"error": "not run"})
    if "error" in gb:
        print(f"| generate_batch | - | - | - | - | {gb['error']} |")
    else:
        print(
            f"| generate_batch ({gb['config']['num_blocks']} pages of {gb['config']['page_size']}) "
            f"| {gb['burst']['tok_s']:.0f} | {gb['burst']['ttft_p50']:.2f} | {gb['poisson']['tok_s']:.0f} "
            f"| {gb['poisson']['ttft_p50']:.2f} | {gb['peak_rss'] / 2**20:.0f} MiB |"
        )
    print(
        f"| Hangar | {h['burst']['tok_s']:.0f} | {h['burst']['ttft_p50']:.2f} "
        f"| {h[first]['tok_s']:.0f} | {h[first]['ttft_p50']:.3f} | {h['rss'] / 2**20:.0f} MiB (after) |"
    )
    # No server finishes before the last request arrives: static's elapsed time over that
    # arrival bounds what any contender's tokens/s can be against static's.
    print(
        "\n| arrivals | last arrival s | static tok/s | Hangar tok/s | Hangar / static tok/s "
        "| bound: static elapsed / last arrival | TTFT p50 Hangar / static |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| all at once | 0 | {s['burst']['tok_s']:.0f} | {h['burst']['tok_s']:.0f} "
        f"| {h['burst']['tok_s'] / s['burst']['tok_s']:.2f}x | - "
        f"| {h['burst']['ttft_p50'] / s['burst']['ttft_p50']:.3f} |"
    )
    for rate in f["rates"]:
        mode, last = f"poisson@{rate:g}", m["last_arrival"][f"{rate:g}"]
        print(
            f"| Poisson {rate:g}/s | {last:.1f} | {s[mode]['tok_s']:.0f} | {h[mode]['tok_s']:.0f} "
            f"| {h[mode]['tok_s'] / s[mode]['tok_s']:.2f}x | {s[mode]['elapsed'] / last:.2f}x "
            f"| {h[mode]['ttft_p50'] / s[mode]['ttft_p50']:.3f} |"
        )
    print("\nGoal: >= 1.5x the static batches' tokens/s, <= 0.2 of their p50 TTFT under Poisson.")


if __name__ == "__main__":
    sys.exit(main())
