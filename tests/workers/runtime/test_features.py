"""Structured outputs, tools, n, logprobs, penalties and logit_bias against a real runtime server.

The model is the tiny random one: it wanders, so every schema here bounds what the grammar
lets it write (maxLength, enums, integer ranges, maxItems), and every assertion is about the
contract (valid JSON for the schema, tool calls in the right shape, numbers that match a
direct forward pass), never about what a trained model would say.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import jsonschema  # type: ignore[import-untyped]
import openai
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from tests.workers.runtime.conftest import RuntimeServer

MESSAGES: list[Any] = [{"role": "user", "content": "Describe the harbor as JSON."}]


def client(server: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="not-needed", max_retries=0, timeout=120)


# ------------------------------------------------------------------ structured outputs


class Boat(BaseModel):
    name: str = Field(max_length=8)
    length_m: int = Field(ge=1, le=400)
    kind: Literal["ferry", "tug", "yacht"]
    crew: list[Literal["captain", "mate", "cook"]] = Field(max_length=3)
    moored: bool


def test_parse_with_a_pydantic_model_returns_a_parsed_object(runtime_server: RuntimeServer) -> None:
    c = client(runtime_server)
    for seed in range(3):
        completion = c.beta.chat.completions.parse(
            model="tiny", messages=MESSAGES, response_format=Boat, max_tokens=200, temperature=1.0, seed=seed
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        assert isinstance(choice.message.parsed, Boat)
        assert Boat.model_validate_json(choice.message.content or "") == choice.message.parsed


def test_parse_streamed_returns_a_parsed_object(runtime_server: RuntimeServer) -> None:
    with client(runtime_server).beta.chat.completions.stream(
        model="tiny", messages=MESSAGES, response_format=Boat, max_tokens=200, temperature=1.0, seed=7
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(deltas) > 1, "the JSON is streamed token by token"
    assert isinstance(final.choices[0].message.parsed, Boat)
    assert "".join(deltas) == final.choices[0].message.content


def test_json_object_mode_yields_a_json_object(runtime_server: RuntimeServer) -> None:
    # An object's grammar allows nesting without limit; a strong bias towards "}" keeps the
    # random model's object short, which is what this test needs (the grammar still decides).
    tok = httpx.post(runtime_server.api_url + "/completions", json={"model": "tiny", "prompt": "}", "max_tokens": 1})
    assert tok.status_code == 200
    resp = client(runtime_server).chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        response_format={"type": "json_object"},
        max_tokens=100,
        temperature=0,
        logit_bias=_bias_towards("}", runtime_server),
    )
    assert resp.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(resp.choices[0].message.content or ""), dict)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_json_object_cut_by_max_tokens_ends_with_length(runtime_server: RuntimeServer, stream: bool) -> None:
    """As OpenAI does: the answer stops where max_tokens says, and finish_reason says why.

    Tokens that could close the object are biased away, so three tokens cannot make a complete
    document; the answer is then a prefix of one, not valid JSON, and says ``length``.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_MODEL_DIR[0], local_files_only=True)
    closing = [t for t in range(len(tokenizer)) if "}" in tokenizer.decode([t])]
    assert 0 < len(closing) <= 300
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "messages": MESSAGES,
        "response_format": {"type": "json_object"},
        "max_tokens": 3,
        "temperature": 0,
        "logit_bias": {str(t): -100 for t in closing},
    }
    c = client(runtime_server)
    if stream:
        chunks = list(c.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
        content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        usage = chunks[-1].usage
    else:
        resp = c.chat.completions.create(**kwargs)
        content, finish, usage = resp.choices[0].message.content or "", [resp.choices[0].finish_reason], resp.usage
    assert finish == ["length"]
    assert usage is not None and usage.completion_tokens == 3
    assert content.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


def test_parse_of_an_answer_cut_by_max_tokens_raises(runtime_server: RuntimeServer) -> None:
    """The openai client refuses to parse a cut document: it checks finish_reason first."""
    with pytest.raises(openai.LengthFinishReasonError):
        client(runtime_server).beta.chat.completions.parse(
            model="tiny", messages=MESSAGES, response_format=Boat, max_tokens=4, temperature=1.0, seed=0
        )


def _bias_towards(text: str, server: RuntimeServer) -> dict[str, int]:
    from transformers import AutoTokenizer

    del server
    tokenizer = AutoTokenizer.from_pretrained(_MODEL_DIR[0], local_files_only=True)
    return {str(t): 30 for t in tokenizer.encode(text, add_special_tokens=False)}


_MODEL_DIR: list[str] = []


@pytest.fixture(autouse=True)
def _remember_model_dir(runtime_model_dir: Any) -> None:
    if not _MODEL_DIR:
        _MODEL_DIR.append(str(runtime_model_dir))


LEAVES = st.one_of(
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 8)),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-1000, 1000),
        st.integers(0, 5000),
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(
        lambda values: {"enum": values},
        st.lists(
            st.text("abcdefgh ", min_size=1, max_size=6) | st.integers(-50, 50), min_size=1, max_size=4, unique=True
        ),
    ),
)


def _object(props: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in props]
    return {
        "type": "object",
        "properties": dict(props),
        "required": names,
        "additionalProperties": False,
    }


SCHEMAS = st.recursive(
    LEAVES,
    lambda inner: (
        st.builds(
            lambda items, n: {"type": "array", "items": items, "maxItems": n},
            inner,
            st.integers(0, 3),
        )
        | st.lists(
            st.tuples(st.from_regex(r"[a-z]{1,6}", fullmatch=True), inner),
            min_size=1,
            max_size=3,
            unique_by=lambda p: p[0],
        ).map(_object)
    ),
    max_leaves=6,
).map(lambda s: s if s.get("type") == "object" else _object([("value", s)]))


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schema=SCHEMAS, seed=st.integers(0, 2**31))
def test_random_json_schemas_always_yield_schema_valid_output(
    runtime_server: RuntimeServer, schema: dict[str, Any], seed: int
) -> None:
    resp = client(runtime_server).chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "doc", "schema": schema, "strict": True}},
        max_tokens=600,
        temperature=1.0,
        seed=seed,
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_strings_never_hold_utf16_surrogates(runtime_server: RuntimeServer) -> None:
    """Biased towards ED A0..BF, a surrogate's bytes (xgrammar's automaton accepts them), the
    answer still holds only real characters: the runtime masks what UTF-8 forbids."""
    import xgrammar as xgr
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_MODEL_DIR[0], local_files_only=True)
    decoded = list(xgr.TokenizerInfo.from_huggingface(tokenizer).decoded_vocab)
    lead = [t for t, b in enumerate(decoded) if b == b"\xed"]
    second = [t for t, b in enumerate(decoded) if len(b) == 1 and 0xA0 <= b[0] <= 0xBF]
    assert lead and second
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 3}},
        "required": ["a"],
        "additionalProperties": False,
    }
    resp = client(runtime_server).chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "doc", "schema": schema, "strict": True}},
        max_tokens=40,
        temperature=0,
        logit_bias={**{str(t): 100 for t in lead}, **{str(t): 60 for t in second}},
    )
    choice = resp.choices[0]
    content = choice.message.content or ""
    assert choice.finish_reason == "stop", choice
    assert "\ufffd" not in content, content
    document = json.loads(content)
    jsonschema.validate(document, schema)
    assert document["a"] and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in document["a"])


def test_an_unusable_schema_is_a_400(runtime_server: RuntimeServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(runtime_server).chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "wizard"}}},
        )
    assert info.value.response.json()["error"]["param"] == "response_format"


# ------------------------------------------------------------------ tools

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather at a port",
        "parameters": {
            "type": "object",
            "properties": {
                "port": {"type": "string", "maxLength": 10},
                "unit": {"enum": ["c", "f"]},
            },
            "required": ["port", "unit"],
            "additionalProperties": False,
        },
    },
}
TIDE = {
    "type": "function",
    "function": {
        "name": "get_tide",
        "parameters": {
            "type": "object",
            "properties": {"hours": {"type": "integer", "minimum": 0, "maximum": 48}},
            "required": ["hours"],
            "additionalProperties": False,
        },
    },
}
TOOLS: list[Any] = [WEATHER, TIDE]
SCHEMAS_BY_NAME = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _calls_from_stream(chunks: list[Any]) -> tuple[list[dict[str, Any]], str | None]:
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name or "") if delta.function else ""
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    return [calls[i] for i in sorted(calls)], finish


def _first_turn(
    c: openai.OpenAI, tool_choice: Any, stream: bool, **extra: Any
) -> tuple[list[dict[str, Any]], str | None]:
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "What is the weather in Oban?"}],
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "max_tokens": 300,
        "temperature": 1.0,
        "seed": 3,
        **extra,
    }
    if stream:
        return _calls_from_stream(list(c.chat.completions.create(**kwargs, stream=True)))
    choice = c.chat.completions.create(**kwargs).choices[0]
    assert choice.message.content is None
    calls = [
        {"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
        for t in choice.message.tool_calls or []
        if t.type == "function"
    ]
    return calls, choice.finish_reason


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize("mode", ["required", "named", "auto"])
def test_two_turn_tool_conversation(runtime_server: RuntimeServer, mode: str, stream: bool) -> None:
    c = client(runtime_server)
    user = {"role": "user", "content": "What is the weather in Oban?"}
    if mode == "auto":
        # The random model does not choose to call a tool on its own; the first turn is the
        # client's (as after any earlier call), and the second turn is where "auto" is tested.
        calls = [{"id": "call_1", "name": "get_weather", "arguments": json.dumps({"port": "Oban", "unit": "c"})}]
    else:
        choice = "required" if mode == "required" else {"type": "function", "function": {"name": "get_tide"}}
        calls, finish = _first_turn(c, choice, stream, parallel_tool_calls=mode == "required")
        assert finish == "tool_calls"
        assert calls, "at least one call"
        for call in calls:
            assert call["id"].startswith("call_")
            jsonschema.validate(json.loads(call["arguments"]), SCHEMAS_BY_NAME[call["name"]])
        if mode == "named":
            assert [call["name"] for call in calls] == ["get_tide"]
    messages: list[Any] = [
        user,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in calls
            ],
        },
        *({"role": "tool", "tool_call_id": call["id"], "content": "12 degrees, light wind"} for call in calls),
    ]
    kwargs: dict[str, Any] = {"model": "tiny", "messages": messages, "tools": TOOLS, "max_tokens": 12, "temperature": 0}
    if stream:
        chunks = list(c.chat.completions.create(**kwargs, tool_choice="auto", stream=True))
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        assert finishes and finishes[0] in ("stop", "length")
    else:
        second = c.chat.completions.create(**kwargs, tool_choice="auto")
        text = second.choices[0].message.content or ""
        assert second.choices[0].finish_reason in ("stop", "length")
        assert second.usage is not None and second.usage.prompt_tokens > 40, "tools and the tool turn are rendered"
    assert isinstance(text, str)


def test_a_forced_tool_call_with_a_response_format_answers_with_the_call(runtime_server: RuntimeServer) -> None:
    """As OpenAI: the forced call is the answer; ``response_format`` is for a later turn's content."""
    schema = {"type": "object", "properties": {"verdict": {"type": "string"}}, "required": ["verdict"]}
    calls, finish = _first_turn(
        client(runtime_server),
        {"type": "function", "function": {"name": "get_tide"}},
        False,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
    )
    assert finish == "tool_calls"
    assert [call["name"] for call in calls] == ["get_tide"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), SCHEMAS_BY_NAME["get_tide"])


def test_tool_choice_naming_an_unknown_function_is_a_400(runtime_server: RuntimeServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(runtime_server).chat.completions.create(
            model="tiny",
            messages=MESSAGES,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )
    assert info.value.response.json()["error"]["param"] == "tool_choice"


def test_tools_are_rendered_into_the_prompt(runtime_server: RuntimeServer) -> None:
    c = client(runtime_server)
    plain = c.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)
    with_tools = c.chat.completions.create(model="tiny", messages=MESSAGES, tools=TOOLS, max_tokens=1)
    none = c.chat.completions.create(model="tiny", messages=MESSAGES, tools=TOOLS, tool_choice="none", max_tokens=1)
    assert plain.usage is not None and with_tools.usage is not None and none.usage is not None
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens


# ------------------------------------------------------------------ n, logprobs, penalties


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_n_choices_share_the_prompt_and_usage_counts_all(runtime_server: RuntimeServer, stream: bool) -> None:
    c = client(runtime_server)
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "prompt": "The lighthouse keeper",
        "max_tokens": 10,
        "temperature": 1.0,
        "n": 4,
        "extra_body": {"ignore_eos": True},
    }
    if stream:
        chunks = list(c.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
        texts = ["", "", "", ""]
        for ch in chunks:
            for choice in ch.choices:
                texts[choice.index] += choice.text
        usage = chunks[-1].usage
    else:
        resp = c.completions.create(**kwargs)
        assert [ch.index for ch in resp.choices] == [0, 1, 2, 3]
        texts = [ch.text for ch in resp.choices]
        usage = resp.usage
    single = c.completions.create(model="tiny", prompt="The lighthouse keeper", max_tokens=1)
    assert usage is not None and single.usage is not None
    assert usage.completion_tokens == 40
    assert usage.prompt_tokens == single.usage.prompt_tokens
    assert len(set(texts)) > 1, "independent samples"
    assert all(texts)


def _forward_logprobs(reference_model: tuple[Any, Any], ids: list[int]) -> torch.Tensor:
    model, _ = reference_model
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)


def test_logprobs_match_a_direct_forward_pass(runtime_server: RuntimeServer, reference_model: tuple[Any, Any]) -> None:
    _, tokenizer = reference_model
    resp = client(runtime_server).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True, top_logprobs=5,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
    assert content is not None and len(content) == 8
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    prompt_len = len(ids)
    vocab = tokenizer.get_vocab()
    for entry in content:
        # The reported token string is the token's own text; map it back through the vocabulary
        # via the top list, whose first entry is the greedy choice.
        assert len(entry.top_logprobs) == 5
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        ids.append(_token_id(tokenizer, vocab, entry.token))
    logp = _forward_logprobs(reference_model, ids)
    for i, entry in enumerate(content):
        position = prompt_len - 1 + i
        assert entry.logprob == pytest.approx(float(logp[position, ids[prompt_len + i]]), abs=1e-3)
        top = torch.topk(logp[position], 5)
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(top.values.tolist(), abs=1e-3)


def _token_id(tokenizer: Any, vocab: dict[str, int], text: str) -> int:
    matches = [i for i in vocab.values() if tokenizer.decode([i]) == text]
    assert matches, text
    return min(matches)


def test_completion_logprobs_shape(runtime_server: RuntimeServer) -> None:
    resp = client(runtime_server).completions.create(
        model="tiny",
        prompt="Gulls over the quay",
        max_tokens=6,
        temperature=0,
        logprobs=3,
        extra_body={"ignore_eos": True},
    )
    lp = resp.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None and lp.top_logprobs is not None
    assert "".join(lp.tokens) == resp.choices[0].text
    assert len(lp.token_logprobs) == 6 and all(v <= 0 for v in lp.token_logprobs)
    assert all(len(top) <= 3 for top in lp.top_logprobs)


def _greedy_with(
    reference_model: tuple[Any, Any], ids: list[int], n: int, *, presence: float = 0.0, frequency: float = 0.0,
    repetition: float = 1.0, bias: dict[int, float] | None = None,
) -> list[int]:  # fmt: skip
    """An independent greedy loop applying OpenAI's penalty formulas, for comparison."""
    model, _ = reference_model
    prompt, out = list(ids), list[int]()
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + out])).logits[0, -1].float().clone()
        for token in set(prompt + out) if repetition != 1.0 else ():
            logits[token] = logits[token] / repetition if logits[token] > 0 else logits[token] * repetition
        for token in set(out):
            logits[token] -= frequency * float(out.count(token)) + presence
        for token, b in (bias or {}).items():
            logits[token] += b
        out.append(int(torch.argmax(logits)))
    return out


@pytest.mark.parametrize(
    "options",
    [
        {"frequency_penalty": 1.5},
        {"presence_penalty": 2.0},
        {"repetition_penalty": 1.8},
        {"logit_bias": {"300": 6.0, "41": -100}},
    ],
    ids=["frequency", "presence", "repetition", "logit_bias"],
)
def test_penalties_and_logit_bias_change_greedy_output_as_specified(
    runtime_server: RuntimeServer, reference_model: tuple[Any, Any], options: dict[str, Any]
) -> None:
    _, tokenizer = reference_model
    ids = [17, 250, 33, 41, 41, 900, 12]
    c = client(runtime_server)
    common: dict[str, Any] = {"model": "tiny", "prompt": ids, "max_tokens": 24, "temperature": 0}
    plain = c.completions.create(**common, extra_body={"ignore_eos": True}).choices[0].text
    changed = c.completions.create(**common, extra_body={"ignore_eos": True, **options}).choices[0].text
    expected = _greedy_with(
        reference_model,
        ids,
        24,
        presence=options.get("presence_penalty", 0.0),
        frequency=options.get("frequency_penalty", 0.0),
        repetition=options.get("repetition_penalty", 1.0),
        bias={int(k): v for k, v in options.get("logit_bias", {}).items()},
    )
    assert changed == tokenizer.decode(expected, skip_special_tokens=True)
    assert changed != plain


def test_min_tokens_blocks_an_early_end(runtime_server: RuntimeServer) -> None:
    # A large bias on the end-of-turn token makes the model stop at once, unless min_tokens.
    eos = str(_eos_id())
    c = client(runtime_server)
    common: dict[str, Any] = {"model": "tiny", "prompt": "Tide tables", "max_tokens": 20, "temperature": 0}
    stopped = c.completions.create(**common, logit_bias={eos: 100})
    held = c.completions.create(**common, logit_bias={eos: 100}, extra_body={"min_tokens": 5})
    assert stopped.usage is not None and held.usage is not None
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == 1
    assert held.choices[0].finish_reason == "stop" and held.usage.completion_tokens == 6


def _eos_id() -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_MODEL_DIR[0], local_files_only=True)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert isinstance(eos, int)
    return eos


@pytest.mark.parametrize(
    ("override", "param"),
    [
        ({"n": 9}, "n"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"logit_bias": {"99999": 1}}, "logit_bias"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
    ],
)
def test_invalid_feature_fields_are_400s(runtime_server: RuntimeServer, override: dict[str, Any], param: str) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, **override}
    resp = httpx.post(runtime_server.api_url + "/chat/completions", json=body, timeout=30)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
