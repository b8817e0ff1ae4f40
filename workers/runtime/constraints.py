"""Constrained decoding with xgrammar: a per-sequence token mask inside the continuous batch.

A request with ``response_format`` ``json_object`` / ``json_schema`` (or a forced tool call)
carries a ``Constraint``: an ``xgrammar.GrammarMatcher`` over a grammar compiled once per
schema (the compiler caches compiled grammars). At every step the engine asks each constrained
row for its allowed-token bitmask, applies all of them to the batch's logits in one call, picks
tokens as usual, and feeds the chosen token back to the row's matcher. Unconstrained rows pay
nothing; there is no separate decoding path.

Why xgrammar rather than outlines-core: both compile JSON schemas into token automata that
run on CPU and GPU, but xgrammar masks with a persistent pushdown automaton whose per-token
cost does not depend on the schema's size (the compiled grammar pre-classifies most of the
vocabulary as context-independent), supports recursive structures (``json_object``, nested
``$ref``) that a regex-based FSM cannot express, and ships ``apply_token_bitmask_inplace``
kernels for CPU and CUDA; its 0.2.9 wheel installs beside the pinned torch. Measured side by
side (``bench/grammar_engines.py``): outlines-core 0.2.14 masks a token in 2.4-3.2 µs against
xgrammar's 5.3-6.1 µs (both negligible beside a decode step), but compiles a schema in 1.7-12.9 ms
against 0.6-1.1 ms, and ``json_object`` in 6.7 s against 0.7 ms, on the request's path.

Limits a client should know: a JSON value can be cut short by ``max_tokens`` (the answer then
ends with ``finish_reason: "length"``, as OpenAI's does); whitespace between tokens is not
allowed (``any_whitespace=False``), which keeps a wandering model from padding forever, and
tokens that would write raw control characters or UTF-16 surrogates are masked too (JSON and
UTF-8 forbid them; see ``TokenRules``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xgrammar as xgr

# Maximal nesting the compiler accepts for a client's schema; deeper schemas get a 400.
MAX_SCHEMA_BYTES = 64 * 1024


class SchemaError(ValueError):
    """The schema cannot be compiled (invalid, or uses an unsupported keyword)."""


class GrammarFactory:
    """Compiles schemas for one tokenizer; thread-safe, caches compiled grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        self.vocab_size = vocab_size
        self.rules = TokenRules.build(tokenizer, list(info.decoded_vocab), vocab_size, set(stop_token_ids))
        self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_limit_bytes=64 * 1024 * 1024)
        self._lock = threading.Lock()

    def json_schema(self, schema: dict[str, Any], *, strict: bool) -> Constraint:
        """A constraint for one JSON document valid for ``schema``."""
        text = json.dumps(schema)
        if len(text) > MAX_SCHEMA_BYTES:
            raise SchemaError(f"the JSON schema exceeds {MAX_SCHEMA_BYTES} bytes")
        try:
            with self._lock:
                compiled = self._compiler.compile_json_schema(text, any_whitespace=False, strict_mode=strict)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise SchemaError(f"the JSON schema cannot be used for constrained decoding: {exc}") from exc
        return Constraint(compiled, self.rules)

    def json_object(self) -> Constraint:
        """A constraint for any JSON object (``response_format: json_object``)."""
        return self.json_schema({"type": "object"}, strict=False)


@dataclass(frozen=True)
class TokenRules:
    """What JSON forbids and xgrammar 0.2.9 lets through, as bitmask words (xgrammar's layout).

    - Raw control characters (U+0000-U+001F): xgrammar's string rule admits them in strings
      with ``maxLength``; JSON forbids them unescaped (``json.loads`` and pydantic reject such
      documents). With ``any_whitespace=False`` they are never needed outside strings either.
    - UTF-16 surrogates (U+D800-U+DFFF): xgrammar's byte automaton accepts their three-byte
      encodings ``ED A0..BF xx``, which are not UTF-8; decoded, each became three U+FFFD and a
      ``maxLength: 3`` string came out five characters long (found by the hypothesis test).
      Tokens holding such a sequence are masked always; after a token that ends with the lead
      byte ``ED``, tokens starting with ``A0..BF`` are masked too.

    Stop tokens are kept: they end the document.
    """

    keep: np.ndarray  # int32 words: every forbidden token's bit cleared
    keep_after_ed: np.ndarray  # the same, and no token starting with a byte A0..BF
    ends_in_ed: np.ndarray  # bool per token: its bytes end with the lead byte ED

    @classmethod
    def build(cls, tokenizer: Any, decoded: list[bytes], vocab_size: int, stop: set[int]) -> TokenRules:
        decoded = decoded[:vocab_size]
        forbidden = _control_tokens(tokenizer, vocab_size, stop)
        forbidden += [t for t, b in enumerate(decoded) if t not in stop and _SURROGATE.search(b)]
        keep = _keep_words(forbidden, vocab_size)
        continuations = [t for t, b in enumerate(decoded) if b and 0xA0 <= b[0] <= 0xBF]
        ends_in_ed = np.zeros(vocab_size, dtype=bool)
        ends_in_ed[[t for t, b in enumerate(decoded) if b.endswith(b"\xed")]] = True
        return cls(keep, keep & _keep_words(continuations, vocab_size), ends_in_ed)


_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")


class Constraint:
    """One sequence's grammar state. Used only on the model thread once submitted."""

    __slots__ = ("_matcher", "_rules", "keep")

    def __init__(self, compiled: xgr.CompiledGrammar, rules: TokenRules) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self._rules = rules
        # Bitmask words ANDed into the grammar's mask for the next token (see TokenRules).
        self.keep = rules.keep

    def accept(self, token: int) -> bool:
        """Advance with the chosen token; False if the grammar rejects it (should not happen)."""
        rules = self._rules
        self.keep = rules.keep_after_ed if token < len(rules.ends_in_ed) and rules.ends_in_ed[token] else rules.keep
        return bool(self._matcher.accept_token(token))

    @property
    def terminated(self) -> bool:
        """The document is complete and its stop token was accepted."""
        return bool(self._matcher.is_terminated())


class TokenMasker:
    """Masks the constrained rows of a batch's logits; one per engine, model thread only.

    Per step: one ``batch_fill_next_token_bitmask`` call writes every constrained row's allowed
    tokens into a bitmask buffer allocated once (grown only when the batch grows), one AND clears
    the forbidden control tokens, and the mask is applied to those rows only. On CPU the bitmask
    is unpacked with ``numpy.unpackbits`` and written with one ``numpy.copyto``: about 50 us for
    32 rows x 2048 tokens where xgrammar's CPU kernel (``apply_token_bitmask_inplace``) took
    about 390 us and a ``masked_fill_`` 120 us (``bench/runtime_mixed.py --only constrained``
    has the end-to-end figures). On other devices xgrammar's kernel (Triton on CUDA) does it.
    """

    def __init__(self) -> None:
        self._bitmask = xgr.allocate_token_bitmask(1, 32)
        self._words = self._bitmask.numpy()
        self._filler = xgr.BatchGrammarMatcher(max_threads=1)  # the model thread's own core

    def apply(self, logits: torch.Tensor, rows: list[int], constraints: list[Constraint]) -> None:
        """Mask ``logits`` ([batch, vocab]) in place: row ``rows[i]`` follows ``constraints[i]``."""
        if not rows:
            return
        batch, vocab = logits.shape
        width = (vocab + 31) // 32
        if self._bitmask.shape[0] < batch or self._bitmask.shape[1] != width:
            self._bitmask = xgr.allocate_token_bitmask(max(batch, self._bitmask.shape[0]), vocab)
            self._words = self._bitmask.numpy()
        self._filler.batch_fill_next_token_bitmask([c._matcher for c in constraints], self._bitmask, rows)
        every = len(rows) == batch
        index = slice(0, batch) if every else np.asarray(rows)
        first = constraints[0].keep
        if all(c.keep is first for c in constraints):  # one tokenizer: always, in practice
            keep = first[:width]
        else:
            keep = np.stack([c.keep[:width] for c in constraints])
        allowed = self._words[index] & keep
        if logits.device.type != "cpu":
            self._words[index] = allowed
            xgr.apply_token_bitmask_inplace(logits, self._bitmask[:batch].to(logits.device), indices=rows)
            return
        # Bit j of word w is token 32 w + j: little-endian words unpacked little-endian bit first.
        blocked = np.unpackbits(
            np.invert(allowed, out=allowed).astype("<i4", copy=False).view(np.uint8),
            axis=-1,
            count=vocab,
            bitorder="little",
        ).view(bool)
        target = logits.numpy()
        if every:
            np.copyto(target, -np.inf, where=blocked)
        else:
            chosen = target[index]
            np.copyto(chosen, -np.inf, where=blocked)
            target[index] = chosen


def _control_tokens(tokenizer: Any, vocab_size: int, keep: set[int]) -> list[int]:
    """Ids of tokens whose text holds a raw control character (U+0000-U+001F), but not ``keep``."""
    size = min(vocab_size, len(tokenizer))
    bad = []
    for token in range(size):
        if token in keep:
            continue
        text = tokenizer.decode([token], skip_special_tokens=False)
        if any(ord(ch) < 0x20 for ch in text):
            bad.append(token)
    return bad


def _keep_words(forbidden: list[int], vocab_size: int) -> np.ndarray:
    """Bitmask words (xgrammar's layout: bit j of word w is token 32 w + j) without ``forbidden``."""
    words = np.full((vocab_size + 31) // 32, 0xFFFFFFFF, dtype=np.uint32)
    for token in forbidden:
        words[token // 32] &= ~np.uint32(1 << (token % 32))
    return words.view(np.int32)
