"""The scheduler in-process: greedy equivalence with ``generate``, joins, leaves, sampling."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from workers.runtime.engine import Engine, GenerationRequest, QueueFullError
from workers.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
PROMPTS = [
    "The",
    "When the tide goes out of the little harbor, the boats lie down",
    "Bees are most gentle on warm, still days",
    "To make a cup of tea, first boil the water. Warm the pot by pouring in a little hot water and "
    "swirling it around, then pour it away. Put one spoonful of tea into the pot for each person",
    "Dear Thomas,",
    "In winter the river runs high and brown, carrying branches",
]


def reference_greedy(model: Any, tokenizer: Any, prompt: str, n: int) -> list[int]:
    """``model.generate`` on the prompt alone: the ground truth for greedy decoding.

    ``eos_token_id=-1`` disables EOS, matching ``ignore_eos`` (``min_new_tokens`` would instead
    forbid EOS and change which token wins).
    """
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=-1)
    return out[0, ids.shape[1] :].tolist()


@pytest.fixture(scope="module")
def engine(reference_model: tuple[Any, Any]) -> Engine:
    model, tokenizer = reference_model
    return Engine(model, tokenizer, max_batch_size=8, eos_token_ids=[0, 2])


class Collector:
    """Consumer that records what the engine delivered."""

    def __init__(self) -> None:
        self.outputs: dict[Any, list[Any]] = {}

    def __call__(self, outputs: list[tuple[Any, Any]]) -> None:
        for consumer, out in outputs:
            self.outputs.setdefault(consumer, []).append(out)

    def finished(self, consumer: Any) -> bool:
        return bool(self.outputs.get(consumer)) and self.outputs[consumer][-1].finished


def test_greedy_batch_matches_generate_token_for_token(engine: Engine, reference_model: tuple[Any, Any]) -> None:
    model, tokenizer = reference_model
    n = 24
    requests = [
        GenerationRequest(tokenizer(p)["input_ids"], max_tokens=n, sampling=GREEDY, ignore_eos=True) for p in PROMPTS
    ]
    results = engine.generate(requests)
    for prompt, (ids, final) in zip(PROMPTS, results, strict=True):
        assert ids == reference_greedy(model, tokenizer, prompt, n), prompt
        assert final.finish_reason == "length"
        assert final.completion_tokens == n


def test_sequences_joining_and_leaving_mid_batch_stay_exact(engine: Engine, reference_model: tuple[Any, Any]) -> None:
    """Staggered arrivals and different lengths: joins pad the cache, leaves trim it."""
    model, tokenizer = reference_model
    collector = Collector()
    engine.deliver = collector
    lengths = [30, 8, 20, 12, 25, 5]
    seqs = []
    with torch.inference_mode():
        for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
            req = GenerationRequest(tokenizer(prompt)["input_ids"], max_tokens=n, sampling=GREEDY, ignore_eos=True)
            seqs.append(engine.submit(req, i))
            # Two decode steps between arrivals, so every newcomer joins a running batch.
            for _ in range(2):
                engine.step()
                engine._flush()
        while engine.batch_size or engine.queue_depth:
            engine.step()
            engine._flush()
    assert engine._cache is None, "an empty batch releases its cache"
    for i, (prompt, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        assert seqs[i].output_ids == reference_greedy(model, tokenizer, prompt, n), prompt
        assert collector.finished(i)
        text = "".join(o.text for o in collector.outputs[i])
        assert text == tokenizer.decode(seqs[i].output_ids, skip_special_tokens=True)


def test_seeded_sampling_is_reproducible_whatever_the_batch(engine: Engine, reference_model: tuple[Any, Any]) -> None:
    _, tokenizer = reference_model
    ids = tokenizer(PROMPTS[1])["input_ids"]
    seeded = SamplingParams(temperature=1.0, top_p=0.9, seed=1234)
    alone = engine.generate([GenerationRequest(ids, max_tokens=16, sampling=seeded, ignore_eos=True)])[0][0]
    crowd = [GenerationRequest(tokenizer(p)["input_ids"], max_tokens=16, sampling=SamplingParams(1.0)) for p in PROMPTS]
    mixed = engine.generate([*crowd, GenerationRequest(ids, max_tokens=16, sampling=seeded, ignore_eos=True)])
    assert mixed[-1][0] == alone
    other_seed = SamplingParams(temperature=1.0, top_p=0.9, seed=4321)
    assert engine.generate([GenerationRequest(ids, max_tokens=16, sampling=other_seed, ignore_eos=True)])[0][0] != alone


def test_tiny_top_p_is_greedy(engine: Engine, reference_model: tuple[Any, Any]) -> None:
    _, tokenizer = reference_model
    ids = tokenizer(PROMPTS[2])["input_ids"]
    nucleus = SamplingParams(temperature=1.5, top_p=1e-6, seed=7)
    greedy, sampled = engine.generate(
        [
            GenerationRequest(ids, max_tokens=12, sampling=GREEDY, ignore_eos=True),
            GenerationRequest(ids, max_tokens=12, sampling=nucleus, ignore_eos=True),
        ]
    )
    assert greedy[0] == sampled[0]


def test_stop_string_ends_sequence_and_is_not_returned(engine: Engine, reference_model: tuple[Any, Any]) -> None:
    _, tokenizer = reference_model
    ids = tokenizer(PROMPTS[0])["input_ids"]
    full_ids, _ = engine.generate([GenerationRequest(ids, max_tokens=30, sampling=GREEDY, ignore_eos=True)])[0]
    full_text = tokenizer.decode(full_ids, skip_special_tokens=True)
    stop = full_text[len(full_text) // 2 : len(full_text) // 2 + 3]
    assert stop.strip(), "need a visible stop string"
    collector = Collector()
    engine.deliver = collector
    _, final = engine.generate([GenerationRequest(ids, max_tokens=30, sampling=GREEDY, stop=(stop,), ignore_eos=True)])[
        0
    ]
    assert final.finish_reason == "stop"
    assert final.completion_tokens < 30


def test_queue_limit_and_cancel(reference_model: tuple[Any, Any]) -> None:
    model, tokenizer = reference_model
    engine = Engine(model, tokenizer, max_batch_size=1, max_queue=2, eos_token_ids=[0, 2])
    collector = Collector()
    engine.deliver = collector
    ids = tokenizer("hello")["input_ids"]
    a = engine.submit(GenerationRequest(ids, max_tokens=50, sampling=GREEDY), "a")
    engine.submit(GenerationRequest(ids, max_tokens=50, sampling=GREEDY), "b")
    with pytest.raises(QueueFullError):
        engine.submit(GenerationRequest(ids, max_tokens=50, sampling=GREEDY), "c")
    with torch.inference_mode():
        engine.step()
        assert engine.batch_size == 1 and engine.queue_depth == 1
        engine.cancel(a)
        engine.step()
    engine._flush()
    assert collector.outputs["a"][-1].finish_reason == "cancelled"
    assert engine.batch_size == 1, "the waiting request took the freed slot"


def test_long_prompt_is_prefilled_in_chunks_while_the_batch_keeps_decoding(
    engine: Engine, reference_model: tuple[Any, Any]
) -> None:
    from workers.runtime.engine import PREFILL_CHUNK

    model, tokenizer = reference_model
    long_prompt = " ".join(PROMPTS * 14)
    long_ids = tokenizer(long_prompt)["input_ids"][: 2 * PREFILL_CHUNK + 100]
    assert len(long_ids) > 2 * PREFILL_CHUNK
    engine.deliver = Collector()
    with torch.inference_mode():
        short = engine.submit(
            GenerationRequest(tokenizer(PROMPTS[1])["input_ids"], max_tokens=20, sampling=GREEDY, ignore_eos=True), "s"
        )
        engine.step()
        long = engine.submit(GenerationRequest(long_ids, max_tokens=10, sampling=GREEDY, ignore_eos=True), "l")
        progress = []
        for _ in range(3):  # three chunks: PREFILL_CHUNK, PREFILL_CHUNK and 100 tokens
            before = len(short.output_ids)
            engine.step()
            progress.append(len(short.output_ids) - before)
        assert progress == [1, 1, 1], "the running sequence decodes during every chunk"
        # Joined after its last chunk: first token from the prefill, one more from that decode step.
        assert len(long.output_ids) == 2
        while engine.batch_size or engine.queue_depth:
            engine.step()
    ref = model.generate(torch.tensor([long_ids]), max_new_tokens=10, do_sample=False, eos_token_id=-1)
    assert long.output_ids == ref[0, len(long_ids) :].tolist()
    assert short.output_ids == reference_greedy(model, tokenizer, PROMPTS[1], 20)


def test_prefill_budget_and_chunk_size_are_settings(reference_model: tuple[Any, Any]) -> None:
    """``prefill_tokens`` bounds the padded tokens of one prefill pass; ``prefill_chunk`` the chunk size."""
    model, tokenizer = reference_model
    engine = Engine(model, tokenizer, max_batch_size=8, eos_token_ids=[0, 2], prefill_tokens=64, prefill_chunk=32)
    engine.deliver = Collector()
    ids = tokenizer(" ".join(PROMPTS * 4))["input_ids"]
    shorts = [ids[i : i + 20] for i in range(4)]
    with torch.inference_mode():
        seqs = [
            engine.submit(GenerationRequest(p, max_tokens=6, sampling=GREEDY, ignore_eos=True), i)
            for i, p in enumerate(shorts)
        ]
        engine.step()
        assert (engine.batch_size, engine.queue_depth) == (3, 1), "3 x 20 tokens fit in 64, a fourth does not"
        long = engine.submit(GenerationRequest(ids[:80], max_tokens=6, sampling=GREEDY, ignore_eos=True), "l")
        engine.step()  # admits the fourth short prompt, and the long one's first chunk is prefilled
        assert engine.queue_depth == 0 and not long.output_ids
        steps = 1
        while not long.output_ids:
            engine.step()
            steps += 1
        assert steps == 3, "80 tokens in chunks of 32: 32 + 32 + 16"
        while engine.batch_size or engine.queue_depth:
            engine.step()
    for seq, prompt in zip([*seqs, long], [*shorts, ids[:80]], strict=True):
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, eos_token_id=-1)
        assert seq.output_ids == ref[0, len(prompt) :].tolist()


def test_short_memory_preempts_the_youngest_and_recomputes_them_exactly(reference_model: tuple[Any, Any]) -> None:
    """A KV budget of ~3 rows: sequences are preempted, requeued and resumed, output unchanged."""
    from workers.runtime.metrics import RuntimeMetrics

    model, tokenizer = reference_model
    metrics = RuntimeMetrics()
    engine = Engine(model, tokenizer, max_batch_size=8, eos_token_ids=[0, 2], metrics=metrics, max_kv_tokens=200)
    n = 30
    prompts = PROMPTS[1:5]
    requests = [
        GenerationRequest(tokenizer(p)["input_ids"], max_tokens=n, sampling=GREEDY, ignore_eos=True) for p in prompts
    ]
    results = engine.generate(requests)
    for prompt, (ids, final) in zip(prompts, results, strict=True):
        assert ids == reference_greedy(model, tokenizer, prompt, n), prompt
        assert final.completion_tokens == n
        assert final.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert (metrics.registry.get_sample_value("hangar_runtime_preemptions_total") or 0) > 0
