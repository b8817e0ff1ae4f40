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
kernels for CPU and CUDA; its 0.2.9 wheel installs beside the pinned torch.

Limits a client should know: a JSON value can be cut short by ``max_tokens`` (the answer then
ends with ``finish_reason: "length"``, as OpenAI's does); whitespace between tokens is not
allowed (``any_whitespace=False``), which keeps a wandering model from padding forever, and
tokens holding raw control characters are masked too (JSON forbids them inside strings).
"""

from __future__ import annotations

import json
import threading
from typing import Any

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
        self.forbidden = _control_tokens(tokenizer, vocab_size, set(stop_token_ids))
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
        return Constraint(compiled, self.forbidden)

    def json_object(self) -> Constraint:
        """A constraint for any JSON object (``response_format: json_object``)."""
        return self.json_schema({"type": "object"}, strict=False)


class Constraint:
    """One sequence's grammar state. Used only on the model thread once submitted."""

    __slots__ = ("_matcher", "forbidden")

    def __init__(self, compiled: xgr.CompiledGrammar, forbidden: torch.Tensor) -> None:
        self._matcher = xgr.GrammarMatcher(compiled)
        self.forbidden = forbidden

    def fill(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into ``bitmask[row]``."""
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token: int) -> bool:
        """Advance with the chosen token; False if the grammar rejects it (should not happen)."""
        return bool(self._matcher.accept_token(token))

    @property
    def terminated(self) -> bool:
        """The document is complete and its stop token was accepted."""
        return bool(self._matcher.is_terminated())


def apply_constraints(logits: torch.Tensor, rows: list[int], constraints: list[Constraint]) -> None:
    """Mask ``logits`` ([batch, vocab]) in place: row ``rows[i]`` follows ``constraints[i]``."""
    if not rows:
        return
    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[1])
    for row, constraint in zip(rows, constraints, strict=True):
        constraint.fill(bitmask, row)
    xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
    for row, constraint in zip(rows, constraints, strict=True):
        if constraint.forbidden.numel():
            logits[row].index_fill_(0, constraint.forbidden.to(logits.device), float("-inf"))


def _control_tokens(tokenizer: Any, vocab_size: int, keep: set[int]) -> torch.Tensor:
    """Ids of tokens whose text holds a raw control character (U+0000-U+001F).

    xgrammar's JSON string rule lets them through, but JSON forbids them unescaped (Python's
    ``json.loads`` and pydantic reject such documents); with ``any_whitespace=False`` no
    control character is ever needed outside strings either, so these tokens are masked for
    every constrained row. Stop tokens are kept: they end the document.
    """
    size = min(vocab_size, len(tokenizer))
    bad = []
    for token in range(size):
        if token in keep:
            continue
        text = tokenizer.decode([token], skip_special_tokens=False)
        if any(ord(ch) < 0x20 for ch in text):
            bad.append(token)
    return torch.tensor(bad, dtype=torch.long)
