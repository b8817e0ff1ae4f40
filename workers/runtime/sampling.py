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
