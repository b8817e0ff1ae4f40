"""Prefix caching: reuse of a shared prompt prefix's KV, exactness, bounds and the hit rate."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.workers.runtime.conftest import RuntimeServer
from tests.workers.runtime.test_engine import reference_greedy
from workers.runtime.engine import Engine, GenerationRequest
from workers.runtime.prefix_cache import BLOCK, PrefixCache
from workers.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
SYSTEM = (
    "You are the harbor master's assistant. You answer questions about tides, moorings, ferries, "
    "fishing boats, the lighthouse and the weather over the bay. Keep answers short and polite, "
    "name the pier when you can, and never promise a berth that the harbor master has not confirmed. "
)
QUESTIONS = [
    "When is high water today?",
    "Can a ten metre yacht moor at the north pier overnight?",
    "Is the ferry to the island running in this wind?",
    "Where do the fishing boats land their catch?",
    "Short?",
    "Which light marks the entrance to the harbor after dark, and how often does it flash?",
]


def _run_one_at_a_time(engine: Engine, prompts: list[list[int]], n: int) -> list[list[int]]:
    return [
        engine.generate([GenerationRequest(p, max_tokens=n, sampling=GREEDY, ignore_eos=True)])[0][0] for p in prompts
    ]


def test_greedy_output_is_identical_with_and_without_the_cache(reference_model: tuple[Any, Any]) -> None:
    model, tokenizer = reference_model
    prompts = [tokenizer(SYSTEM + q)["input_ids"] for q in QUESTIONS]
    cache = PrefixCache(64 * 1024 * 1024)
    cached = Engine(model, tokenizer, max_batch_size=8, eos_token_ids=[0, 2], prefix_cache=cache)
    plain = Engine(model, tokenizer, max_batch_size=8, eos_token_ids=[0, 2])
    n = 16
    with_cache = _run_one_at_a_time(cached, prompts, n)
    # And all at once: the later prompts find the first ones' prefix while others are decoding.
    batched = [ids for ids, _ in cached.generate([GenerationRequest(p, n, GREEDY, ignore_eos=True) for p in prompts])]
    without = _run_one_at_a_time(plain, prompts, n)
    assert with_cache == without == batched
    assert with_cache[0] == reference_greedy(model, tokenizer, SYSTEM + QUESTIONS[0], n)
    shared = len(tokenizer(SYSTEM)["input_ids"]) // BLOCK * BLOCK
    assert cache.hit_tokens >= shared * (2 * len(prompts) - 1), "every prompt but the first reused the system prompt"
    assert 0 < cache.hit_rate < 1


def test_long_remainders_go_through_chunked_prefill_on_top_of_the_prefix(reference_model: tuple[Any, Any]) -> None:
    model, tokenizer = reference_model
    long_tail = " ".join(f"Berth {i} is free." for i in range(150))
    prompts = [tokenizer(SYSTEM + "Short?")["input_ids"], tokenizer(SYSTEM + long_tail)["input_ids"]]
    assert len(prompts[1]) - len(prompts[0]) > 512
    cache = PrefixCache(64 * 1024 * 1024)
    engine = Engine(model, tokenizer, max_batch_size=8, eos_token_ids=[0, 2], prefix_cache=cache)
    got = _run_one_at_a_time(engine, prompts, 8)
    assert got[1] == reference_greedy(model, tokenizer, SYSTEM + long_tail, 8)
    assert cache.hit_tokens > 0


def test_the_cache_is_bounded_and_evicts_the_least_recently_used(reference_model: tuple[Any, Any]) -> None:
    model, tokenizer = reference_model
    probe = PrefixCache(1 << 40)
    engine = Engine(model, tokenizer, eos_token_ids=[0, 2], prefix_cache=probe)
    _run_one_at_a_time(engine, [tokenizer(SYSTEM + QUESTIONS[0])["input_ids"]], 1)
    one_entry = probe.bytes
    assert one_entry > 0
    cache = PrefixCache(int(one_entry * 2.5))
    engine = Engine(model, tokenizer, eos_token_ids=[0, 2], prefix_cache=cache)
    distinct = [tokenizer(f"{i} " * 3 + SYSTEM + q)["input_ids"] for i, q in enumerate(QUESTIONS[:4])]
    _run_one_at_a_time(engine, distinct, 1)
    assert cache.bytes <= cache.max_bytes
    assert cache.lookup(distinct[0]) is None, "the oldest entry was evicted"
    assert cache.lookup(distinct[3]) is not None


@pytest.mark.parametrize("stream", [False, True])
def test_server_reuses_a_shared_system_prompt_and_reports_the_hit_rate(
    runtime_server: RuntimeServer, reference_model: tuple[Any, Any], stream: bool
) -> None:
    model, tokenizer = reference_model
    c = openai.OpenAI(base_url=runtime_server.api_url, api_key="x", max_retries=0, timeout=60)
    before = runtime_server.metrics()
    system = SYSTEM + ("(streamed)" if stream else "")
    texts = []
    for q in QUESTIONS[:3]:
        kwargs: dict[str, Any] = {"model": "tiny", "prompt": system + q, "max_tokens": 12, "temperature": 0}
        if stream:
            chunks = c.completions.create(**kwargs, stream=True, extra_body={"ignore_eos": True})
            texts.append("".join(ch.choices[0].text for ch in chunks if ch.choices))
        else:
            texts.append(c.completions.create(**kwargs, extra_body={"ignore_eos": True}).choices[0].text)
    for q, text in zip(QUESTIONS[:3], texts, strict=True):
        expected = reference_greedy(model, tokenizer, system + q, 12)
        assert text == tokenizer.decode(expected, skip_special_tokens=True)
    after = runtime_server.metrics()
    hits = (
        after["hangar_runtime_prefix_cache_hit_tokens_total"] - before["hangar_runtime_prefix_cache_hit_tokens_total"]
    )
    shared = len(tokenizer(system)["input_ids"]) // BLOCK * BLOCK
    assert hits >= 2 * shared
    assert 0 < after["hangar_runtime_prefix_cache_hit_rate"] <= 1
    assert after["hangar_runtime_prefix_cache_bytes"] > 0
