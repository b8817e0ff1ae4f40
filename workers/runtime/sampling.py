"""Batched next-token selection for the decode step.

One call picks the next token for every row of the running batch. Greedy rows (temperature 0)
are an ``argmax`` over the whole batch; sampled rows get temperature and nucleus (top-p)
filtering as batched tensor operations, and only the final draw is per row, because each
request owns a ``torch.Generator`` so that a ``seed`` reproduces its output whatever else is
in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request decoding parameters (already validated by ``protocol``)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def adjusts_logits(self) -> bool:
        """True when penalties or a logit bias change this row's logits."""
        return bool(
            self.presence_penalty or self.frequency_penalty or self.repetition_penalty != 1.0 or self.logit_bias
        )

    @property
    def greedy(self) -> bool:
        """Temperature 0 means deterministic argmax decoding, as in OpenAI's API."""
        return self.temperature <= 0.0


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """Return a generator for a sampled request (seeded if asked), or None for greedy ones."""
    if params.greedy:
        return None
    gen = torch.Generator(device=device)
    if params.seed is not None:
        gen.manual_seed(params.seed)
    else:
        gen.seed()
    return gen


def select_next_tokens(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """Choose one token per row of ``logits`` ([batch, vocab]) and return them as ints.

    A single ``.tolist()`` at the end is the only device-to-host transfer of the step.
    """
    next_tokens = torch.argmax(logits, dim=-1)
    sampled_rows = [i for i, p in enumerate(params) if not p.greedy]
    if sampled_rows:
        rows = torch.tensor(sampled_rows, device=logits.device)
        sub = logits.index_select(0, rows).float()
        temps = torch.tensor([params[i].temperature for i in sampled_rows], device=logits.device)
        sub = sub / temps.unsqueeze(1)
        top_ps = torch.tensor([params[i].top_p for i in sampled_rows], device=logits.device)
        if bool((top_ps < 1.0).any()):
            sub = _apply_top_p(sub, top_ps)
        probs = torch.softmax(sub, dim=-1)
        for j, row in enumerate(sampled_rows):
            next_tokens[row] = torch.multinomial(probs[j], 1, generator=generators[row])[0]
    return [int(t) for t in next_tokens.tolist()]


def _apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask tokens outside each row's nucleus; the most likely token always survives."""
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the mass *before* it already reaches top_p.
    remove_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p.unsqueeze(1)
    remove_sorted[:, 0] = False
    remove = torch.zeros_like(remove_sorted).scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def adjust_logits(
    logits: torch.Tensor, params: list[SamplingParams], prompts: list[list[int]], outputs: list[list[int]]
) -> None:
    """Apply penalties and logit bias in place to the rows that ask for them.

    Semantics follow OpenAI and vLLM: presence and frequency penalties look at the generated
    tokens only (``logit -= presence * [count > 0] + frequency * count``); the repetition
    penalty (the CTRL / transformers one) looks at prompt and generated tokens and divides
    positive logits (multiplies negative ones) by the penalty; ``logit_bias`` is added last.
    """
    for row, p in enumerate(params):
        if not p.adjusts_logits:
            continue
        line = logits[row]
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(prompts[row]) | set(outputs[row])), dtype=torch.long, device=line.device)
            if seen.numel():
                values = line.index_select(0, seen)
                values = torch.where(values > 0, values / p.repetition_penalty, values * p.repetition_penalty)
                line.index_copy_(0, seen, values)
        if (p.presence_penalty or p.frequency_penalty) and outputs[row]:
            ids = torch.tensor(outputs[row], dtype=torch.long, device=line.device)
            counts = torch.bincount(ids, minlength=line.shape[0])[: line.shape[0]].to(line.dtype)
            line -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(line.dtype)
        for token, bias in p.logit_bias:
            if token < line.shape[0]:
                line[token] += bias
