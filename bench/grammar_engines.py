"""Benchmark: xgrammar against outlines-core for the runtime's constrained decoding (issue 15).

Not a test. Both engines get the same tokenizer (the tiny model's), the same byte sequence per
token (xgrammar's decoded vocabulary, special tokens left out) and the same schemas and documents
(``json.dumps``' separators: xgrammar with ``any_whitespace=False``, as the runtime compiles
them, writes exactly those; outlines-core gets one optional space as its whitespace pattern). Per schema and engine:

- **compile**: from the schema text to something that masks (xgrammar: a fresh
  ``GrammarCompiler`` each time, so its cache does not help; outlines-core: the regex and its
  ``Index`` over the vocabulary), median of ``--repeat`` rounds;
- **per token**: walking a valid document token by token, what one decode step costs
  the engine: write the allowed-token bitmask (both write the same int32 layout) and advance by
  the chosen token; median over ``--repeat`` walks, in microseconds per token;
- **accepts**: whether every token of the document was allowed at its step (a check that both
  engines constrain the same language on this document).

``json_object`` is ``{"type": "object"}``: any JSON object. xgrammar's pushdown automaton takes
any depth; outlines-core builds a regular expression, which cannot express unbounded nesting.

    pip install outlines-core==0.2.14   # not a runtime dependency: only this benchmark uses it
    .venv/bin/python bench/grammar_engines.py [--repeat 5] [--json OUT]

Figures of 2026-11-30 (``--repeat 5``, xgrammar 0.2.9, outlines-core 0.2.14, the tiny model's
2048-token vocabulary; medians):

| schema | tokens | compile ms xgrammar / outlines-core | µs per token xgrammar / outlines-core |
|---|---|---|---|
| flat object | 35 | 0.8 / 12.9 | 5.5 / 2.6 |
| tool arguments | 39 | 0.6 / 1.7 | 5.3 / 2.4 |
| nested order | 151 | 1.1 / 6.6 | 5.6 / 2.6 |
| json_object | 71 | 0.7 / 6718.5 | 6.1 / 3.2 |

Both accept every document. outlines-core masks about twice as fast per token, but either
costs under 0.4 ms per decode step of 64 rows (a step takes about 30 ms here), while its compile
time grows with the schema (and its index with the vocabulary: 2048 tokens here, 128k in
current models) and ``json_object`` took 6.7 s, on the request path. The runtime keeps
xgrammar (``workers/runtime/constraints.py`` says why).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from workers.runtime.tinymodel import build_tiny_model  # noqa: E402

SCHEMAS: dict[str, tuple[dict[str, Any], Any]] = {
    "flat object": (
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "age": {"type": "integer", "minimum": 0, "maximum": 150},
                "admin": {"type": "boolean"},
            },
            "required": ["name", "age", "admin"],
            "additionalProperties": False,
        },
        {"name": "Ada Lovelace", "age": 36, "admin": True},
    ),
    "tool arguments": (
        {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["location", "unit", "days"],
            "additionalProperties": False,
        },
        {"location": "Paris, France", "unit": "celsius", "days": 3},
    ),
    "nested order": (
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "status": {"type": "string", "enum": ["new", "paid", "shipped", "cancelled"]},
                "customer": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                    "required": ["name", "email"],
                    "additionalProperties": False,
                },
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "sku": {"type": "string"},
                            "quantity": {"type": "integer"},
                            "price": {"type": "number"},
                        },
                        "required": ["sku", "quantity", "price"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["id", "status", "customer", "items"],
            "additionalProperties": False,
        },
        {
            "id": "A-1024",
            "status": "paid",
            "customer": {"name": "Grace Hopper", "email": "grace@example.org"},
            "items": [
                {"sku": "KB-01", "quantity": 2, "price": 49.5},
                {"sku": "MS-07", "quantity": 1, "price": 19.0},
            ],
        },
    ),
    "json_object": (
        {"type": "object"},
        {"answer": "yes", "score": 0.75, "tags": ["a", "b"], "meta": {"source": "bench", "n": 2}},
    ),
}


# xgrammar with any_whitespace=False writes ", " and ": " (json.dumps' own separators) and
# nothing else; outlines-core's closest pattern lets one optional space stand wherever JSON
# allows whitespace (a slightly larger language).
WHITESPACE = "[ ]?"


def vocabulary(model_dir: Path) -> tuple[Any, Any, list[bytes], int, int]:
    """(tokenizer, xgrammar TokenizerInfo, bytes per token id, vocabulary size, eos id)."""
    import xgrammar as xgr
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    size = AutoConfig.from_pretrained(str(model_dir), local_files_only=True).vocab_size
    eos = int(tokenizer.eos_token_id)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=size, stop_token_ids=[eos])
    return tokenizer, info, list(info.decoded_vocab), size, eos


def bench_xgrammar(info: Any, size: int, schema: str, tokens: list[int], repeat: int) -> dict[str, Any]:
    import xgrammar as xgr

    compile_s = []
    for _ in range(repeat):
        compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        start = time.perf_counter()
        compiled = compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
        compile_s.append(time.perf_counter() - start)
    bitmask = xgr.allocate_token_bitmask(1, size)
    per_token, accepts = [], True
    for _ in range(repeat):
        matcher = xgr.GrammarMatcher(compiled)
        start = time.perf_counter()
        for token in tokens:
            matcher.fill_next_token_bitmask(bitmask)
            allowed = bool((int(bitmask[0, token // 32]) >> (token % 32)) & 1)
            accepts = accepts and allowed and matcher.accept_token(token)
        per_token.append((time.perf_counter() - start) / len(tokens))
    return {
        "compile_ms": statistics.median(compile_s) * 1e3,
        "us_per_token": statistics.median(per_token) * 1e6,
        "accepts": accepts,
    }


def bench_outlines(
    token_bytes: list[bytes], eos: int, special: set[int], schema: str, tokens: list[int], repeat: int
) -> dict[str, Any]:
    import numpy as np
    from outlines_core import Guide, Index, Vocabulary
    from outlines_core.json_schema import build_regex_from_schema

    mapping: dict[bytes, list[int]] = {}
    for token_id, data in enumerate(token_bytes):
        if data and token_id not in special:
            mapping.setdefault(data, []).append(token_id)
    vocab = Vocabulary(eos, mapping)
    compile_s = []
    index = None
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            regex = build_regex_from_schema(schema, WHITESPACE)
            index = Index(regex, vocab)
            compile_s.append(time.perf_counter() - start)
    except Exception as exc:  # report what the engine cannot do rather than stop the run
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    assert index is not None
    words = (len(token_bytes) + 31) // 32
    bitmask = np.zeros(words, dtype=np.int32)
    per_token, accepts = [], True
    for _ in range(repeat):
        guide = Guide(index)
        start = time.perf_counter()
        for token in tokens:
            guide.write_mask_into(bitmask.ctypes.data, words, 4)
            allowed = bool((int(bitmask[token // 32]) >> (token % 32)) & 1)
            accepts = accepts and allowed
            if not allowed or token == eos:  # outlines-core has no state after end-of-sequence
                break
            guide.advance(token, False)
        per_token.append((time.perf_counter() - start) / len(tokens))
    return {
        "compile_ms": statistics.median(compile_s) * 1e3,
        "us_per_token": statistics.median(per_token) * 1e6,
        "accepts": accepts,
        "regex_chars": len(regex),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path(tempfile.gettempdir()) / "hangar-bench-tiny")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    try:
        import outlines_core  # noqa: F401
    except ImportError:
        print("outlines-core is not installed: pip install outlines-core==0.2.14", file=sys.stderr)
        return 2
    model_dir = build_tiny_model(args.model_dir, seed=0)
    tokenizer, info, token_bytes, size, eos = vocabulary(model_dir)
    special = set(tokenizer.all_special_ids)
    from importlib.metadata import version

    figures: dict[str, Any] = {
        "versions": {"xgrammar": version("xgrammar"), "outlines_core": version("outlines-core")},
        "vocab_size": size,
        "schemas": {},
    }
    for name, (schema, document) in SCHEMAS.items():
        text = json.dumps(schema)
        tokens = [*tokenizer.encode(json.dumps(document), add_special_tokens=False), eos]
        row = {
            "tokens": len(tokens),
            "xgrammar": bench_xgrammar(info, size, text, tokens, args.repeat),
            "outlines_core": bench_outlines(token_bytes, eos, special, text, tokens, args.repeat),
        }
        figures["schemas"][name] = row
        print(f"{name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    print(
        f"\n## xgrammar {figures['versions']['xgrammar']} against outlines-core, vocabulary of {size}, "
        f"medians of {args.repeat}\n"
    )
    print("| schema | tokens | compile ms xgrammar / outlines-core | µs per token xgrammar / outlines-core | accepts |")
    print("|---|---|---|---|---|")
    for name, row in figures["schemas"].items():
        x, o = row["xgrammar"], row["outlines_core"]
        if "error" in o:
            print(
                f"| {name} | {row['tokens']} | {x['compile_ms']:.1f} / - | {x['us_per_token']:.1f} / - | {o['error']} |"
            )
            continue
        print(
            f"| {name} | {row['tokens']} | {x['compile_ms']:.1f} / {o['compile_ms']:.1f} "
            f"| {x['us_per_token']:.1f} / {o['us_per_token']:.1f} | {x['accepts']} / {o['accepts']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
