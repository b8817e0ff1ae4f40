"""Unit tests: tiny model builder, loader checks, request validation, detokenizer, sampling."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.workers.runtime.conftest import REPO_ROOT
from workers.runtime.detokenizer import IncrementalDetokenizer
from workers.runtime.loader import LoadOptions, ModelLoadError, check_weights, load_model
from workers.runtime.protocol import ApiError, parse_chat, parse_completion
from workers.runtime.sampling import SamplingParams, select_next_tokens
from workers.runtime.tinymodel import MARKER_FILE, build_tiny_model, is_complete

# ------------------------------------------------------------------ tiny model


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_is_deterministic_and_idempotent(runtime_model_dir: Path, tmp_path: Path) -> None:
    assert is_complete(runtime_model_dir, 0)
    stamp = (runtime_model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(runtime_model_dir, seed=0) == runtime_model_dir
    assert (runtime_model_dir / "model.safetensors").stat().st_mtime_ns == stamp, "second build must do nothing"
    other = build_tiny_model(tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(other / name) == _digest(runtime_model_dir / name), name
    reseeded = build_tiny_model(tmp_path / "again", seed=1)  # replaces our own build
    assert _digest(reseeded / "model.safetensors") != _digest(runtime_model_dir / "model.safetensors")
    assert is_complete(reseeded, 1) and not is_complete(reseeded, 0)


def test_tiny_model_refuses_to_overwrite_foreign_dir(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path, seed=0)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / MARKER_FILE).exists()


def test_tiny_model_loads_with_auto_classes(runtime_model_dir: Path, reference_model: tuple[Any, Any]) -> None:
    model, tokenizer = reference_model
    assert model.config.model_type == "llama"
    assert 2_000_000 < sum(p.numel() for p in model.parameters()) < 10_000_000
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(tokenizer.encode("The harbor at low tide.")) == "The harbor at low tide."


# ------------------------------------------------------------------ loader


def test_runtime_imports_nothing_from_the_control_plane(runtime_model_dir: Path) -> None:
    """The replica image holds only workers/runtime: no Django, console or controlplane."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from workers.runtime.__main__ import build_parser\n"
        "from workers.runtime.server import Runtime, ServerConfig, create_app\n"
        "from workers.runtime.loader import LoadOptions, load_model\n"
        "from workers.runtime.engine import Engine\n"
        f"loaded = load_model(Path({str(runtime_model_dir)!r}), LoadOptions())\n"
        "Engine(loaded.model, loaded.tokenizer).warmup()\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'console', 'controlplane', 'rest_framework'})\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_check_weights(tmp_path: Path, runtime_model_dir: Path) -> None:
    assert check_weights(runtime_model_dir, allow_unsafe=False) is True
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_weights(tmp_path / "missing", allow_unsafe=False)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no weights"):
        check_weights(tmp_path, allow_unsafe=False)
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="allow-unsafe-weights"):
        check_weights(tmp_path, allow_unsafe=False)
    assert check_weights(tmp_path, allow_unsafe=True) is False


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_load_with_dtype(runtime_model_dir: Path, dtype: str) -> None:
    loaded = load_model(runtime_model_dir, LoadOptions(dtype=dtype))
    assert next(loaded.model.parameters()).dtype == getattr(torch, dtype)
    assert loaded.eos_token_ids == [2, 0]
    assert loaded.max_model_len == 2048


def test_int8_quantizes_linear_layers(runtime_model_dir: Path) -> None:
    loaded = load_model(runtime_model_dir, LoadOptions(quantization="int8"))
    q_proj = loaded.model.model.layers[0].self_attn.q_proj
    assert "quantized" in type(q_proj).__module__
    full = load_model(runtime_model_dir, LoadOptions())
    # Linear weights shrink 4x; embeddings stay float32.
    assert full.weights_bytes > 2.5 * loaded.weights_bytes
    with pytest.raises(ModelLoadError, match="float32"):
        load_model(runtime_model_dir, LoadOptions(quantization="int8", dtype="bfloat16"))


# ------------------------------------------------------------------ protocol


def test_parse_chat_defaults_and_content_parts() -> None:
    req = parse_chat(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        },
        "m",
    )
    assert req.messages == [{"role": "user", "content": "ab"}]
    assert req.params.max_tokens is None
    assert req.params.sampling == SamplingParams(temperature=1.0, top_p=1.0, seed=None)
    assert not req.params.stream


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "prompt": ""},
        {"model": "m", "prompt": ["a", "b"]},
        {"model": "m", "prompt": 5},
        {"model": "m", "prompt": "x", "echo": True},
        {"model": "m", "prompt": "x", "best_of": 2},
        {"model": "m", "prompt": "x", "max_tokens": True},
        {"model": "m", "prompt": "x", "temperature": "hot"},
        {"model": "m", "prompt": "x", "stop": [1]},
        {"model": "m", "prompt": "x", "stream": "yes"},
        {"prompt": "x"},
    ],
)
def test_parse_completion_rejects(body: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as info:
        parse_completion(body, "m")
    assert info.value.status == 400


def test_parse_completion_accepts_single_item_lists() -> None:
    assert parse_completion({"model": "m", "prompt": ["hello"]}, "m").prompt == "hello"
    assert parse_completion({"model": "m", "prompt": [[1, 2]]}, "m").prompt == [1, 2]
    assert parse_completion({"model": "m", "prompt": "x", "seed": -1}, "m").params.sampling.seed == 2**64 - 1


# ------------------------------------------------------------------ detokenizer and sampling


class CharDecoder:
    """Each id is one character; 0 is a special token that decodes to nothing."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i)


def _feed(detok: IncrementalDetokenizer, text: str) -> list[str]:
    ids: list[int] = []
    out = []
    for ch in text:
        ids.append(ord(ch))
        out.append(detok.add(ids))
        if detok.stopped:
            break
    out.append(detok.flush(ids))
    return out


def test_detokenizer_holds_back_possible_stop_prefix() -> None:
    detok = IncrementalDetokenizer(CharDecoder(), stop=("END",))
    pieces = _feed(detok, "abENxEND tail")
    assert "".join(pieces) == "abENx"
    assert detok.stopped
    # "EN" was held back until "x" proved it was not the stop string.
    assert pieces[:5] == ["a", "b", "", "", "ENx"]


def test_detokenizer_without_stop_streams_everything() -> None:
    detok = IncrementalDetokenizer(CharDecoder())
    assert "".join(_feed(detok, "hello world")) == "hello world"
    assert not detok.stopped


def test_detokenizer_waits_for_complete_utf8(reference_model: tuple[Any, Any]) -> None:
    _, tokenizer = reference_model
    ids = tokenizer.encode("naïve café ☕ done")
    detok = IncrementalDetokenizer(tokenizer.backend_tokenizer)
    pieces = [detok.add(ids[: i + 1]) for i in range(len(ids))]
    pieces.append(detok.flush(ids))
    assert "".join(pieces) == "naïve café ☕ done"
    assert all("\ufffd" not in p for p in pieces)


def test_select_next_tokens_mixes_greedy_and_sampled_rows() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    greedy = SamplingParams(temperature=0.0)
    sampled = SamplingParams(temperature=0.5, seed=3)
    gen = torch.Generator().manual_seed(3)
    out = select_next_tokens(logits, [greedy, sampled, greedy], [None, gen, None])
    assert out[0] == 1 and out[2] == 2
    assert out[1] in (0, 1, 2)


# ------------------------------------------------------------------ grammar masks


@pytest.mark.parametrize("rows", [[0, 1, 2, 3, 4], [0, 3], [4]], ids=["every-row", "some-rows", "last-row"])
def test_token_masker_matches_xgrammars_own_kernel(reference_model: tuple[Any, Any], rows: list[int]) -> None:
    """The numpy mask path blocks exactly what xgrammar's kernel plus the control-token rule block."""
    import xgrammar as xgr

    from workers.runtime.constraints import GrammarFactory, TokenMasker

    model, tokenizer = reference_model
    vocab = int(model.config.vocab_size)
    factory = GrammarFactory(tokenizer, vocab, [tokenizer.eos_token_id])
    # A string with maxLength is where xgrammar itself lets raw control characters through.
    string = {"type": "string", "maxLength": 8}
    schema = {"type": "object", "properties": {"a": string, "b": {"type": "integer"}}, "required": ["a"]}
    prefixes = ['{"a": "x', "", '{"a": "', '{"a": "q", "b": ', '{"a": "q", "b": -1']  # inside strings, keys, numbers
    constraints = [factory.json_schema(schema, strict=True) for _ in rows]
    for row, constraint in zip(rows, constraints, strict=True):
        assert constraint._matcher.accept_string(prefixes[row])
    logits = torch.randn(5, vocab, generator=torch.Generator().manual_seed(0))
    expected = logits.clone()

    TokenMasker().apply(logits, rows, constraints)

    bitmask = xgr.allocate_token_bitmask(5, vocab)
    for row, constraint in zip(rows, constraints, strict=True):
        constraint._matcher.fill_next_token_bitmask(bitmask, row)
    xgr.apply_token_bitmask_inplace(expected, bitmask, indices=rows)
    forbidden = [t for t in range(vocab) if not (int(factory.rules.keep[t // 32]) >> (t % 32)) & 1]
    assert forbidden, "the tiny tokenizer has byte tokens for control characters"
    for row in rows:
        expected[row, forbidden] = float("-inf")
    assert torch.equal(logits, expected)
    untouched = [r for r in range(5) if r not in rows]
    assert not torch.isinf(logits[untouched]).any()
    assert all(torch.isfinite(logits[r]).sum() >= 1 for r in rows)


def test_no_utf16_surrogate_can_be_written(reference_model: tuple[Any, Any]) -> None:
    """After the lead byte ED only 80..9F may follow: ED A0..BF would encode a surrogate, not UTF-8."""
    import xgrammar as xgr

    from workers.runtime.constraints import GrammarFactory, TokenMasker

    model, tokenizer = reference_model
    vocab = int(model.config.vocab_size)
    decoded = list(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab).decoded_vocab)
    byte_token = {b: t for t, b in enumerate(decoded) if len(b) == 1}
    factory = GrammarFactory(tokenizer, vocab, [tokenizer.eos_token_id])
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}, "required": ["a"]}
    constraint = factory.json_schema(schema, strict=True)
    for byte in b'{"a": "\xed':
        assert constraint.accept(byte_token[bytes([byte])])
    probe = factory.json_schema(schema, strict=True)
    assert probe._matcher.accept_string(b'{"a": "\xed\xa0'), "the gap this guards: xgrammar accepts a surrogate"

    logits = torch.zeros(1, vocab)
    TokenMasker().apply(logits, [0], [constraint])
    allowed = [t for t in range(vocab) if logits[0, t] > float("-inf")]
    assert byte_token[b"\x9f"] in allowed
    assert {decoded[t][0] for t in allowed} <= set(range(0x80, 0xA0))


# ------------------------------------------------------------------ the batch's cache layers


def test_cache_layer_appends_into_spare_columns_and_keeps_earlier_views() -> None:
    from workers.runtime.engine import SpareColumnsLayer

    layer = SpareColumnsLayer()
    prompt = torch.randn(3, 2, 5, 4)
    keys, _ = layer.update(prompt, -prompt)
    assert torch.equal(keys, prompt)
    buffer = layer._kbuf
    assert buffer is not None and buffer.shape[-2] == 5 + SpareColumnsLayer.SPARE
    steps = [torch.randn(3, 2, 1, 4) for _ in range(SpareColumnsLayer.SPARE + 1)]
    keys, values = layer.update(steps[0], -steps[0])
    assert layer._kbuf is buffer, "a decode step writes into the spare room: no copy"
    assert torch.equal(keys, torch.cat([prompt, steps[0]], dim=2)) and torch.equal(values, -keys)
    earlier = keys  # a view into the buffer the next steps write to
    for step in steps[1:]:
        keys, values = layer.update(step, -step)
    assert layer._kbuf is not buffer, "the spare room ran out: one copy, with new spare room"
    assert torch.equal(keys, torch.cat([prompt, *steps], dim=2)) and torch.equal(values, -keys)
    assert torch.equal(earlier, torch.cat([prompt, steps[0]], dim=2)), "views handed out are untouched"
    assert layer.get_seq_length() == 5 + len(steps)

    # Row surgery: keep rows 2 and 0, drop the first two columns; the spare room survives.
    whole = keys.clone()
    layer.keep(torch.tensor([2, 0]), 2)
    assert torch.equal(layer.keys, whole[[2, 0], :, 2:]) and torch.equal(layer.values, -whole[[2, 0], :, 2:])
    kept = layer._kbuf
    step = torch.randn(2, 2, 1, 4)
    keys, _ = layer.update(step, -step)
    assert layer._kbuf is kept and torch.equal(keys, torch.cat([whole[[2, 0], :, 2:], step], dim=2))

    # Assigning (the engine's merge) replaces the buffer; the next step copies once.
    layer.keys, layer.values = whole, -whole
    assert torch.equal(layer.keys, whole)
    keys, _ = layer.update(torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))
    assert torch.equal(keys[:, :, :-1], whole) and not keys[:, :, -1].any()
