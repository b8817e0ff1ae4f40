"""Continuous-batching scheduler: the loop that runs on the model thread.

Scheduling is iteration-level. Between two decode steps the loop (1) drops sequences whose
client went away, (2) prefills newly arrived requests (several at once, left-padded) and
splices them into the running batch, (3) runs one decode step for every running sequence and
(4) removes finished sequences at once. Nobody waits for the slowest member of a batch.
Prompts longer than ``PREFILL_CHUNK`` tokens are prefilled alone, one chunk per iteration
(chunked prefill), so a long prompt never stalls the running streams for its whole prefill.

KV cache layout: one batched ``DynamicCache`` whose rows are *left-padded* to a common length
``T``. A 2-D attention mask marks the padding and explicit per-row ``position_ids`` keep
rotary positions exact, so a row computes the same thing it would alone (greedy output is
token-for-token identical to ``model.generate``; tests check this). The cache is only
re-padded when membership changes: joining rows are padded on the left to ``T`` (or the batch
is padded to the newcomers' length), leaving rows are dropped with one ``index_select`` and
leading columns that became padding in every row are trimmed. A steady batch just appends one
column per step, as ``generate`` does.

Thread model: HTTP handlers call ``submit`` / ``cancel`` from the event loop thread; the
model thread owns every tensor. Outputs of a whole step are handed to ``deliver`` in one call
so the server can forward them with a single ``call_soon_threadsafe``.

Limitation: models with sliding-window or hybrid caches are not supported by this scheduler.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from workers.runtime.constraints import TokenMasker
from workers.runtime.detokenizer import IncrementalDetokenizer
from workers.runtime.metrics import RuntimeMetrics
from workers.runtime.prefix_cache import Entry, PrefixCache
from workers.runtime.sampling import SamplingParams, adjust_logits, make_generator, select_next_tokens

log = logging.getLogger(__name__)

# Upper bound of padded prompt tokens prefilled in one forward pass: keeps the pause that a
# burst of arrivals imposes on running streams short.
PREFILL_TOKEN_BUDGET = 4096
# Prompts longer than this are prefilled alone, one chunk per scheduler iteration, so that a
# long prompt delays each decode step of the running batch by one chunk instead of by its
# whole prefill. Short prompts meanwhile are prefilled together with little padding.
# 4096 / 256 halved the burst's median time to first token against 8192 / 512, with the same
# tokens/s and p90 (``bench/runtime_mixed.py --only scheduling``, figures in its docstring).
PREFILL_CHUNK = 256


class QueueFullError(Exception):
    """Raised by ``Engine.submit`` when ``max_queue`` requests are already waiting."""


@dataclass(slots=True)
class GenerationRequest:
    """A validated request, in token ids."""

    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    arrival: float = field(default_factory=time.monotonic)
    min_tokens: int = 0
    # None: no log probabilities; k >= 0: the chosen token's plus the k most likely.
    logprobs: int | None = None
    constraint: Any = None  # a constraints.Constraint (token mask) or None


# One generated token's log probability and its top alternatives: (token id, logprob, top).
TokenLogprob = tuple[int, float, list[tuple[int, float]]]


@dataclass(slots=True)
class StepOutput:
    """What one step produced for one sequence."""

    text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    logprobs: list[TokenLogprob] | None = None


class Sequence:
    """A request being served; the handle returned by ``Engine.submit``."""

    _ids = itertools.count()

    def __init__(self, request: GenerationRequest, consumer: Any, detok: IncrementalDetokenizer) -> None:
        self.id = next(self._ids)
        self.request = request
        self.consumer = consumer
        self.detok = detok
        self.output_ids: list[int] = []
        self.cancelled = False
        self.finished = False
        self.generator: torch.Generator | None = None
        self.last_token_time = 0.0
        self.pending_logprobs: list[TokenLogprob] = []
        self.prefix: tuple[Entry, int] | None = None  # cached prompt prefix found at admission
        self.preempted = False  # leaving the batch to wait for memory (not finished)
        self.looked_up = False

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt_ids)

    @property
    def context(self) -> list[int]:
        """What a prefill computes: the prompt, plus the tokens generated before a preemption."""
        return self.request.prompt_ids + self.output_ids if self.output_ids else self.request.prompt_ids

    @property
    def context_len(self) -> int:
        return self.prompt_len + len(self.output_ids)


Deliver = Callable[[list[tuple[Any, StepOutput]]], None]


class Engine:
    """Owns the model and the running batch; see the module docstring."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 32,
        max_queue: int = 256,
        eos_token_ids: Iterable[int] = (),
        metrics: RuntimeMetrics | None = None,
        deliver: Deliver | None = None,
        prefix_cache: PrefixCache | None = None,
        max_kv_tokens: int | None = None,
        prefill_tokens: int = PREFILL_TOKEN_BUDGET,
        prefill_chunk: int = PREFILL_CHUNK,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        # The Rust tokenizer decodes without the Python wrapper's per-call overhead.
        self._decoder = getattr(tokenizer, "backend_tokenizer", tokenizer)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.eos_token_ids = frozenset(eos_token_ids)
        self.metrics = metrics
        self.deliver: Deliver = deliver or (lambda outputs: None)
        self.prefix_cache = prefix_cache
        # Bound of the batched cache in token slots (rows x padded width); None: unbounded.
        self.max_kv_tokens = max_kv_tokens
        # Padded prompt tokens per prefill pass, and the length above which a prompt is chunked.
        self.prefill_tokens = prefill_tokens
        self.prefill_chunk = prefill_chunk

        self._cond = threading.Condition()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [B, T] long, 1 = real token
        self._positions: torch.Tensor | None = None  # [B] long, position of the next token
        self._pending: list[tuple[Any, StepOutput]] = []
        self._prefilling: list[Sequence] = []  # admitted, not yet in the batch
        # Long prompts being prefilled chunk by chunk: (sequence, its own cache, tokens done).
        self._chunked: collections.deque[tuple[Sequence, DynamicCache, int]] = collections.deque()
        self._masker = TokenMasker()  # grammar masks of constrained rows (structured outputs)

    # ---------------------------------------------------------------- thread-safe API

    def submit(self, request: GenerationRequest, consumer: Any) -> Sequence:
        """Queue a request; outputs are delivered as ``(consumer, StepOutput)`` pairs."""
        seq = Sequence(request, consumer, IncrementalDetokenizer(self._decoder, request.stop))
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already queued")
            self._waiting.append(seq)
            self._update_gauges()
            self._cond.notify()
        return seq

    def submit_many(self, requests: list[GenerationRequest], consumers: list[Any]) -> list[Sequence]:
        """Queue several requests at once (the ``n`` choices of one prompt), all or none."""
        seqs = [
            Sequence(r, c, IncrementalDetokenizer(self._decoder, r.stop))
            for r, c in zip(requests, consumers, strict=True)
        ]
        with self._cond:
            if len(self._waiting) + len(seqs) > self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already queued")
            self._waiting.extend(seqs)
            self._update_gauges()
            self._cond.notify()
        return seqs

    def cancel(self, seq: Sequence) -> None:
        """Stop a sequence (client went away); its slot is freed before the next step."""
        seq.cancelled = True
        with self._cond:
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def batch_size(self) -> int:
        return len(self._running)

    def run(self, stop: threading.Event) -> None:
        """Scheduler loop; returns when ``stop`` is set."""
        with torch.inference_mode():
            while not stop.is_set():
                with self._cond:
                    while not stop.is_set() and not self._waiting and not self._running and not self._chunked:
                        self._cond.wait(timeout=0.5)
                try:
                    self.step()
                except Exception as exc:  # a failed step must not kill the server
                    log.exception("engine step failed")
                    self._fail_all(exc)
                self._flush()

    # ---------------------------------------------------------------- scheduling

    def _admit(self) -> tuple[list[Sequence], list[Sequence]]:
        """Pop waiting sequences that fit into the batch (caller holds the lock).

        Returns the sequences to prefill from scratch and those whose prompt starts with a
        cached prefix (prefilled on top of it); long remainders go to chunked prefill.
        """
        admitted: list[Sequence] = []
        hits: list[Sequence] = []
        budget = self.prefill_tokens
        longest = hit_tokens = 0
        while (
            self._waiting and len(self._running) + len(self._chunked) + len(admitted) + len(hits) < self.max_batch_size
        ):
            seq = self._waiting[0]
            if seq.cancelled:
                self._waiting.popleft()
                self._finish(seq, "cancelled")
                continue
            prefix = self._lookup(seq)
            todo = seq.context_len - (prefix[1] if prefix else 0)
            if todo > self.prefill_chunk:
                done = prefix[1] if prefix else 0
                self._chunked.append((self._waiting.popleft(), _cache_from(prefix, 1), done))
                continue
            if prefix:
                if hits and hit_tokens + todo > budget:
                    break
                hit_tokens += todo
                hits.append(self._waiting.popleft())
                continue
            longest_if = max(longest, seq.context_len)
            if admitted and longest_if * (len(admitted) + 1) > budget:
                break
            if not self._kv_fits(len(admitted) + len(hits) + 1, longest_if):
                break
            longest = longest_if
            admitted.append(self._waiting.popleft())
        self._update_gauges()
        return admitted, hits

    def _lookup(self, seq: Sequence) -> tuple[Entry, int] | None:
        """The cached prefix of ``seq``'s prompt (looked up once per sequence)."""
        if self.prefix_cache is None:
            return None
        if not seq.looked_up:
            seq.looked_up = True
            seq.prefix = self.prefix_cache.lookup(seq.request.prompt_ids)
            if self.metrics:
                self.metrics.observe_prefix_cache(self.prefix_cache)
        return seq.prefix

    def step(self) -> None:
        """One scheduler iteration: evict cancelled, admit and prefill newcomers, decode once."""
        cancelled = [s for s in self._running if s.cancelled]
        for seq in cancelled:
            self._finish(seq, "cancelled")
        if cancelled:
            self._remove_finished()
        for item in [c for c in self._chunked if c[0].cancelled]:
            self._chunked.remove(item)
            self._finish(item[0], "cancelled")
        with self._cond:
            admitted, hits = self._admit()
            self._prefilling = admitted + hits
        if admitted:
            self._prefill(admitted)
        if hits:
            self._prefill_hits(hits)
        self._prefilling = []
        if self._chunked:
            self._prefill_chunk()
        if self._running:
            self._decode()
        self._update_gauges()

    def _prefill(self, seqs: list[Sequence]) -> None:
        # Identical prompts (the n choices of one request) are computed once and copied.
        unique: dict[tuple[int, ...], int] = {}
        rows = [unique.setdefault(tuple(s.context), len(unique)) for s in seqs]
        prompts = list(unique)
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - lengths[i] :] = torch.tensor(prompt)
            mask[i, width - lengths[i] :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1, :]
        if self.prefix_cache is not None:
            for i, prompt in enumerate(prompts):
                start = width - lengths[i]
                self.prefix_cache.insert(
                    list(prompt),
                    [
                        (_tensor(la.keys)[i : i + 1, :, start:], _tensor(la.values)[i : i + 1, :, start:])
                        for la in _layers(cache)
                    ],
                )
        if len(prompts) < len(seqs):
            index = torch.tensor(rows, device=self.device)
            for layer in _layers(cache):
                layer.keys = _tensor(layer.keys).index_select(0, index)
                layer.values = _tensor(layer.values).index_select(0, index)
            mask, logits = mask.index_select(0, index), logits.index_select(0, index)
        for s in seqs:
            s.generator = s.generator or make_generator(s.request.sampling, self.device)
        if self.metrics:
            self.metrics.prompt_tokens.inc(sum(lengths))
        tokens = self._select(logits, seqs)
        self._merge(seqs, cache, mask, torch.tensor([s.context_len for s in seqs], device=self.device))
        self._accept_tokens(seqs, tokens)
        self._remove_finished()

    def _prefill_chunk(self) -> None:
        """Advance the oldest long prompt by one chunk; splice it in when it is complete."""
        seq, cache, done = self._chunked[0]
        prompt = seq.context
        end = min(done + self.prefill_chunk, len(prompt))
        last = end == len(prompt)
        out = self.model(
            input_ids=torch.tensor([prompt[done:end]], device=self.device),
            attention_mask=torch.ones((1, end), dtype=torch.long, device=self.device),
            position_ids=torch.arange(done, end, device=self.device).unsqueeze(0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        if not last:
            self._chunked[0] = (seq, cache, end)
            return
        self._chunked.popleft()
        seq.generator = seq.generator or make_generator(seq.request.sampling, self.device)
        if self.metrics:
            self.metrics.prompt_tokens.inc(len(prompt))
        if self.prefix_cache is not None:
            self.prefix_cache.insert(prompt, [(_tensor(la.keys), _tensor(la.values)) for la in _layers(cache)])
        tokens = self._select(out.logits[:, -1, :], [seq])
        mask = torch.ones((1, end), dtype=torch.long, device=self.device)
        self._merge([seq], cache, mask, torch.tensor([end], device=self.device))
        self._accept_tokens([seq], tokens)
        self._remove_finished()

    def _prefill_hits(self, seqs: list[Sequence]) -> None:
        """Prefill prompts on top of their cached prefix, one forward per shared prefix."""
        groups: dict[tuple[int, int], list[Sequence]] = {}
        for seq in seqs:
            assert seq.prefix is not None
            groups.setdefault((seq.prefix[0].id, seq.prefix[1]), []).append(seq)
        for group in groups.values():
            self._prefill_on_prefix(group)

    def _prefill_on_prefix(self, seqs: list[Sequence]) -> None:
        """Rows are ``[cached prefix][padding][rest of the prompt]``; the mask hides the gap."""
        assert seqs[0].prefix is not None
        cached = seqs[0].prefix[1]
        rests = [s.context[cached:] for s in seqs]
        width = max(len(r) for r in rests)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        rest_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, rest in enumerate(rests):
            ids[i, width - len(rest) :] = torch.tensor(rest)
            rest_mask[i, width - len(rest) :] = 1
        ids, rest_mask = ids.to(self.device), rest_mask.to(self.device)
        positions = cached + (rest_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones((len(seqs), cached), dtype=torch.long, device=self.device), rest_mask], dim=1)
        cache = _cache_from(seqs[0].prefix, len(seqs))
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        if self.prefix_cache is not None:
            for i, seq in enumerate(seqs):
                gap = slice(cached, cached + width - len(rests[i]))
                self.prefix_cache.insert(
                    seq.context,
                    [
                        (_drop(_tensor(la.keys)[i : i + 1], gap), _drop(_tensor(la.values)[i : i + 1], gap))
                        for la in _layers(cache)
                    ],
                )
        for s in seqs:
            s.generator = s.generator or make_generator(s.request.sampling, self.device)
        if self.metrics:
            self.metrics.prompt_tokens.inc(sum(s.context_len for s in seqs))
        tokens = self._select(out.logits[:, -1, :], seqs)
        self._merge(seqs, cache, mask, torch.tensor([s.context_len for s in seqs], device=self.device))
        self._accept_tokens(seqs, tokens)
        self._remove_finished()

    def _decode(self) -> None:
        assert self._mask is not None and self._positions is not None and self._cache is not None
        batch = len(self._running)
        last = torch.tensor([s.output_ids[-1] for s in self._running], device=self.device)
        self._mask = torch.cat([self._mask, torch.ones((batch, 1), dtype=torch.long, device=self.device)], dim=1)
        out = self.model(
            input_ids=last.unsqueeze(1),
            attention_mask=self._mask,
            position_ids=self._positions.unsqueeze(1),
            past_key_values=self._cache,
            use_cache=True,
        )
        self._positions = self._positions + 1
        tokens = self._select(out.logits[:, -1, :], self._running)
        self._accept_tokens(self._running, tokens)
        self._remove_finished()
        self._preempt_if_short()

    # ---------------------------------------------------------------- token selection

    def _select(self, logits: torch.Tensor, seqs: list[Sequence]) -> list[int]:
        """Pick one token per row: penalties and bias, min_tokens, grammar masks, then sampling.

        Log probabilities are those of the model's distribution (before penalties and masks),
        as OpenAI and vLLM report them.
        """
        logits = logits.float()
        want = [i for i, s in enumerate(seqs) if s.request.logprobs is not None]
        logp = torch.log_softmax(logits.index_select(0, torch.tensor(want, device=self.device)), -1) if want else None
        params = [s.request.sampling for s in seqs]
        if any(p.adjusts_logits for p in params):
            adjust_logits(logits, params, [s.request.prompt_ids for s in seqs], [s.output_ids for s in seqs])
        self._block_early_eos(logits, seqs)
        rows = [i for i, s in enumerate(seqs) if s.request.constraint is not None]
        if rows:
            self._masker.apply(logits, rows, [seqs[i].request.constraint for i in rows])
        tokens = select_next_tokens(logits, params, [s.generator for s in seqs])
        if logp is not None:
            self._record_logprobs(logp, [seqs[i] for i in want], [tokens[i] for i in want])
        return tokens

    def _block_early_eos(self, logits: torch.Tensor, seqs: list[Sequence]) -> None:
        """``min_tokens``: end-of-sequence is impossible until enough tokens exist."""
        early = [
            i for i, s in enumerate(seqs) if len(s.output_ids) < s.request.min_tokens and s.request.constraint is None
        ]
        if not early or not self.eos_token_ids:
            return
        eos = torch.tensor(sorted(self.eos_token_ids), device=self.device)
        eos = eos[eos < logits.shape[1]]
        for i in early:
            logits[i].index_fill_(0, eos, float("-inf"))

    @staticmethod
    def _record_logprobs(logp: torch.Tensor, seqs: list[Sequence], tokens: list[int]) -> None:
        top_k = max(s.request.logprobs or 0 for s in seqs)
        chosen = logp.gather(1, torch.tensor(tokens, device=logp.device).unsqueeze(1)).squeeze(1).tolist()
        top_v, top_i = logp.topk(top_k, dim=-1) if top_k else (logp[:, :0], logp[:, :0].long())
        top_v_l, top_i_l = top_v.tolist(), top_i.tolist()
        for j, s in enumerate(seqs):
            k = s.request.logprobs or 0
            top = list(zip(top_i_l[j][:k], top_v_l[j][:k], strict=True))
            s.pending_logprobs.append((tokens[j], chosen[j], top))

    # ---------------------------------------------------------------- batch surgery

    def _merge(self, seqs: list[Sequence], cache: DynamicCache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        """Splice freshly prefilled rows into the running batch."""
        if self._cache is None or not self._running:
            self._cache, self._mask, self._positions = cache, mask, positions
            self._running = list(seqs)
            return
        assert self._mask is not None and self._positions is not None
        old_t, new_t = self._mask.shape[1], mask.shape[1]
        width = max(old_t, new_t)
        for old_layer, new_layer in zip(_layers(self._cache), _layers(cache), strict=True):
            old_layer.keys = _cat_left_padded(_tensor(old_layer.keys), _tensor(new_layer.keys), width)
            old_layer.values = _cat_left_padded(_tensor(old_layer.values), _tensor(new_layer.values), width)
        self._mask = torch.cat([_left_pad(self._mask, width, -1), _left_pad(mask, width, -1)], dim=0)
        self._positions = torch.cat([self._positions, positions])
        self._running.extend(seqs)

    def _kv_fits(self, joining: int, longest: int) -> bool:
        """Would the batched cache stay within ``max_kv_tokens`` with ``joining`` more rows?"""
        if self.max_kv_tokens is None or (not self._running and joining == 1):
            return True
        width = self._mask.shape[1] if self._mask is not None else 0
        return (len(self._running) + len(self._chunked) + joining) * max(width, longest) <= self.max_kv_tokens

    def _preempt_if_short(self) -> None:
        """Memory is short: send the youngest running sequences back to the queue.

        The batched cache holds ``rows x width`` token slots; when that exceeds
        ``max_kv_tokens`` the most recently arrived sequences leave the batch and wait at the
        head of the queue with what they generated so far; they are prefilled again (prompt plus
        output, the recompute policy) when there is room, and continue exactly where they were.
        """
        if self.max_kv_tokens is None or self._mask is None or len(self._running) <= 1:
            return
        width = self._mask.shape[1]
        victims: list[Sequence] = []
        by_age = sorted(self._running, key=lambda s: s.request.arrival)
        while len(by_age) > 1 and len(by_age) * width > self.max_kv_tokens:
            victims.append(by_age.pop())
        if not victims:
            return
        for seq in victims:
            seq.preempted = True
        self._remove_finished()
        with self._cond:
            self._waiting.extendleft(sorted(victims, key=lambda s: s.request.arrival, reverse=True))
        if self.metrics:
            self.metrics.preemptions.inc(len(victims))

    def _remove_finished(self) -> None:
        if not any(s.finished or s.preempted for s in self._running):
            return
        keep = [i for i, s in enumerate(self._running) if not s.finished and not s.preempted]
        for s in self._running:
            s.preempted = False
        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._positions = None
            return
        assert self._cache is not None and self._mask is not None and self._positions is not None
        idx = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, idx)
        # Columns that are padding in every remaining row are dead weight: trim them.
        start = int(mask.any(dim=0).to(torch.int8).argmax())
        self._mask = mask[:, start:]
        self._positions = self._positions.index_select(0, idx)
        for layer in _layers(self._cache):
            if isinstance(layer, SpareColumnsLayer):
                layer.keep(idx, start)
                continue
            layer.keys = _tensor(layer.keys).index_select(0, idx)[:, :, start:]
            layer.values = _tensor(layer.values).index_select(0, idx)[:, :, start:]

    # ---------------------------------------------------------------- outputs

    def _accept_tokens(self, seqs: list[Sequence], tokens: list[int]) -> None:
        now = time.monotonic()
        m = self.metrics
        for seq, token in zip(seqs, tokens, strict=True):
            if seq.finished:
                continue
            seq.output_ids.append(token)
            if m:
                if len(seq.output_ids) == 1:
                    m.time_to_first_token.observe(now - seq.request.arrival)
                else:
                    m.inter_token_latency.observe(now - seq.last_token_time)
            seq.last_token_time = now
            req = seq.request
            n = len(seq.output_ids)
            if req.constraint is not None and (not req.constraint.accept(token) or req.constraint.terminated):
                self._finish(seq, "stop")
                continue
            if token in self.eos_token_ids and not req.ignore_eos:
                self._finish(seq, "stop")
                continue
            delta = seq.detok.add(seq.output_ids)
            if seq.detok.stopped:
                self._finish(seq, "stop", delta)
            elif n >= req.max_tokens:
                self._finish(seq, "length", delta)
            else:
                self._pending.append(
                    (seq.consumer, StepOutput(delta, completion_tokens=n, logprobs=self._take_lp(seq)))
                )
        if m:
            m.completion_tokens.inc(len(tokens))

    def _finish(self, seq: Sequence, reason: str, text: str = "", error: str | None = None) -> None:
        if seq.finished:
            return
        seq.finished = True
        if reason in ("stop", "length"):
            text += seq.detok.flush(seq.output_ids)
        if self.metrics and reason in ("stop", "length"):  # completed generations only
            self.metrics.e2e_latency.observe(time.monotonic() - seq.request.arrival)
        self._pending.append(
            (
                seq.consumer,
                StepOutput(
                    text,
                    finished=True,
                    finish_reason=reason,
                    prompt_tokens=seq.prompt_len,
                    completion_tokens=len(seq.output_ids),
                    error=error,
                    logprobs=self._take_lp(seq, final=reason == "stop"),
                ),
            )
        )

    def _take_lp(self, seq: Sequence, *, final: bool = False) -> list[TokenLogprob] | None:
        """Hand out the logprobs recorded since the last output (not the stop token's)."""
        if seq.request.logprobs is None:
            return None
        entries, seq.pending_logprobs = seq.pending_logprobs, []
        if final and entries and seq.output_ids and entries[-1][0] == seq.output_ids[-1]:
            last = seq.output_ids[-1]
            if last in self.eos_token_ids or seq.request.constraint is not None:
                entries = entries[:-1]
        return entries

    def _fail_all(self, exc: Exception) -> None:
        for seq in [*self._running, *self._prefilling, *(c[0] for c in self._chunked)]:
            self._finish(seq, "error", error=f"{type(exc).__name__}: {exc}")
        self._running, self._prefilling = [], []
        self._chunked.clear()
        self._cache = self._mask = self._positions = None
        self._update_gauges()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.deliver(pending)

    def _update_gauges(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.batch_size.set(len(self._running))

    # ---------------------------------------------------------------- offline use

    def warmup(self) -> None:
        """Run prefill, a join, decode steps and both sampling paths once before serving.

        The first forward passes of a fresh process pay for allocator growth and kernel
        selection; doing it here keeps that out of the first user's time-to-first-token.
        """
        vocab = int(self.model.config.vocab_size)
        ids = [i % vocab for i in range(3, 40)]
        metrics, self.metrics = self.metrics, None  # warm-up is not traffic
        greedy = SamplingParams(temperature=0.0)
        sampled = SamplingParams(temperature=0.8, top_p=0.9, seed=0)
        try:
            self.generate(
                [
                    GenerationRequest(ids[:5], max_tokens=4, sampling=greedy, ignore_eos=True),
                    GenerationRequest(ids, max_tokens=6, sampling=sampled, ignore_eos=True),
                ]
            )
        finally:
            self.metrics = metrics
            if self.prefix_cache is not None:  # warm-up prompts are not traffic either
                self.prefix_cache.clear()

    def generate(self, requests: list[GenerationRequest]) -> list[tuple[list[int], StepOutput]]:
        """Run ``requests`` to completion on the calling thread (warm-up, tests, benchmarks).

        Must not be used while ``run`` is active on another thread.
        """
        seqs = [Sequence(r, i, IncrementalDetokenizer(self._decoder, r.stop)) for i, r in enumerate(requests)]
        finals: dict[int, StepOutput] = {}
        saved = self.deliver

        def collect(outputs: list[tuple[Any, StepOutput]]) -> None:
            for consumer, out in outputs:
                if out.finished:
                    finals[consumer] = out

        self.deliver = collect
        try:
            with torch.inference_mode():
                self._waiting.extend(seqs)
                while self._waiting or self._running or self._chunked:
                    self.step()
                    self._flush()
        finally:
            self.deliver = saved
        return [(s.output_ids, finals[s.consumer]) for s in seqs]


class UnsupportedCacheError(RuntimeError):
    """The model uses a cache layout (sliding window, linear attention...) we cannot splice."""


class SpareColumnsLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values fill the front of buffers with spare columns.

    ``DynamicLayer.update`` concatenates, so every decode step copied each layer's whole cache
    to add one column (about 13 % of the engine's time on the mixed benchmark, in cProfile). Here a
    step writes its column into the spare room, and only when that runs out is the buffer copied,
    with ``SPARE`` more columns. Reading ``keys`` / ``values`` gives a view of the filled part;
    assigning them (the engine's row surgery) replaces the buffer, with no spare room until the
    next append. Views handed out earlier stay valid: appends only write past their end. The
    spare room (at most ``SPARE`` columns per row) is not counted by ``--max-kv-tokens``.
    """

    SPARE = 64

    def __init__(self) -> None:
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._klen = self._vlen = 0
        super().__init__()  # type: ignore[no-untyped-call]  # transformers' __init__ is untyped

    @property
    def keys(self) -> torch.Tensor | None:
        return _filled(self._kbuf, self._klen)

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        self._kbuf, self._klen = value, _columns(value)

    @property
    def values(self) -> torch.Tensor | None:
        return _filled(self._vbuf, self._vlen)

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self._vbuf, self._vlen = value, _columns(value)

    def keep(self, rows: torch.Tensor, start: int) -> None:
        """Keep ``rows`` and drop the first ``start`` columns, spare room included (one copy)."""
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf, self._klen = self._kbuf.index_select(0, rows)[:, :, start:], self._klen - start
        self._vbuf, self._vlen = self._vbuf.index_select(0, rows)[:, :, start:], self._vlen - start

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._kbuf, self._klen = _append(self._kbuf, self._klen, key_states, self.SPARE)
        self._vbuf, self._vlen = _append(self._vbuf, self._vlen, value_states, self.SPARE)
        return _tensor(self.keys), _tensor(self.values)


def _columns(x: torch.Tensor | None) -> int:
    return x.shape[-2] if x is not None and x.dim() == 4 else 0


def _filled(buf: torch.Tensor | None, length: int) -> torch.Tensor | None:
    if buf is None or buf.dim() != 4 or buf.shape[-2] == length:
        return buf
    return buf[:, :, :length]


def _append(buf: torch.Tensor | None, length: int, new: torch.Tensor, spare: int) -> tuple[torch.Tensor, int]:
    """``buf``'s first ``length`` columns followed by ``new``, in place when there is room."""
    n = new.shape[-2]
    if buf is None or buf.dim() != 4 or buf.shape[-2] - length < n:
        grown = new.new_empty((*new.shape[:2], length + n + spare, new.shape[-1]))
        if length:
            assert buf is not None
            grown[:, :, :length] = buf[:, :, :length]
        buf = grown
    buf[:, :, length : length + n] = new
    return buf, length + n


def _new_cache() -> DynamicCache:
    """An empty cache whose layers (created as the model first writes them) keep spare columns."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = SpareColumnsLayer
    return cache


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = list(cache.layers)
    for layer in layers:
        # Exact types: subclasses (sliding window, ...) keep extra state that row surgery breaks.
        if type(layer) not in (DynamicLayer, SpareColumnsLayer):
            raise UnsupportedCacheError(f"cache layer {type(layer).__name__} is not supported by the scheduler")
    return layers  # type: ignore[return-value]  # checked above


def _cache_from(prefix: tuple[Entry, int] | None, rows: int) -> DynamicCache:
    """A fresh cache holding ``rows`` copies of a cached prefix (empty without one)."""
    cache = _new_cache()
    if prefix is None:
        return cache
    entry, tokens = prefix
    for i, (keys, values) in enumerate(entry.layers):
        k, v = keys[:, :, :tokens], values[:, :, :tokens]
        cache.update(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1), i)  # update copies them
    return cache


def _drop(x: torch.Tensor, gap: slice) -> torch.Tensor:
    """[1, H, T, D] without the padding columns in ``gap``."""
    if gap.start == gap.stop:
        return x
    return torch.cat([x[:, :, : gap.start], x[:, :, gap.stop :]], dim=2)


def _tensor(x: torch.Tensor | None) -> torch.Tensor:
    assert x is not None, "cache layer used before initialisation"
    return x


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def _cat_left_padded(a: torch.Tensor, b: torch.Tensor, width: int) -> torch.Tensor:
    """Concatenate two [B, H, T, D] cache tensors along the batch, left-padding T to ``width``."""
    return torch.cat([_left_pad(a, width, -2), _left_pad(b, width, -2)], dim=0)
