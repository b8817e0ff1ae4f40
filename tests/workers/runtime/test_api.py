"""The runtime's OpenAI API, driven by the official ``openai`` client against a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.waiting import wait_for
from tests.workers.runtime.conftest import RuntimeServer

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Tell me about the harbor at low tide."},
]
NO_EOS = {"ignore_eos": True}  # extension: make lengths deterministic on a random model


def client(server: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="not-needed", max_retries=0, timeout=60)


def reference_text(reference_model: tuple[Any, Any], prompt_ids: list[int], n: int) -> str:
    import torch

    model, tokenizer = reference_model
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=-1)
    return str(tokenizer.decode(out[0, len(prompt_ids) :], skip_special_tokens=True))


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def test_models_lists_the_served_model(runtime_server: RuntimeServer) -> None:
    models = client(runtime_server).models.list()
    assert [m.id for m in models.data] == ["tiny"]


def test_chat_completion_is_greedy_exact_with_usage(
    runtime_server: RuntimeServer, reference_model: tuple[Any, Any]
) -> None:
    _, tokenizer = reference_model
    resp = client(runtime_server).chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=20, temperature=0, extra_body=NO_EOS
    )
    prompt_ids = chat_prompt_ids(tokenizer, MESSAGES)
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == reference_text(reference_model, prompt_ids, 20)
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len(prompt_ids)
    assert resp.usage.completion_tokens == 20
    assert resp.usage.total_tokens == len(prompt_ids) + 20


def test_chat_streaming_matches_non_streaming_and_reports_usage(runtime_server: RuntimeServer) -> None:
    c = client(runtime_server)
    kwargs: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "max_tokens": 15, "temperature": 0}
    full = c.chat.completions.create(**kwargs, extra_body=NO_EOS)
    chunks = list(
        c.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}, extra_body=NO_EOS)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == full.choices[0].message.content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 15
    assert full.usage is not None and chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_streaming_without_usage_sends_no_usage_chunk(runtime_server: RuntimeServer) -> None:
    chunks = list(
        client(runtime_server).chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, stream=True
        )
    )
    assert all(ch.choices for ch in chunks)
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_text_completion_stream_and_not(runtime_server: RuntimeServer, reference_model: tuple[Any, Any]) -> None:
    _, tokenizer = reference_model
    prompt = "Every year on the last night of the harvest"
    c = client(runtime_server)
    resp = c.completions.create(model="tiny", prompt=prompt, max_tokens=25, temperature=0, extra_body=NO_EOS)
    expected = reference_text(reference_model, tokenizer(prompt)["input_ids"], 25)
    assert resp.object == "text_completion"
    assert resp.choices[0].text == expected
    assert resp.usage is not None and resp.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    stream = c.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=25,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_EOS,
    )
    chunks = list(stream)
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == expected
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 25


def test_token_id_prompt(runtime_server: RuntimeServer, reference_model: tuple[Any, Any]) -> None:
    ids = [5, 77, 300, 12]
    resp = client(runtime_server).completions.create(
        model="tiny", prompt=ids, max_tokens=8, temperature=0, extra_body=NO_EOS
    )
    assert resp.choices[0].text == reference_text(reference_model, ids, 8)
    assert resp.usage is not None and resp.usage.prompt_tokens == 4


def test_sixteen_concurrent_requests_are_batched_and_exact(
    runtime_server: RuntimeServer, reference_model: tuple[Any, Any]
) -> None:
    _, tokenizer = reference_model
    prompts = [f"Question {i}: what is the river like in {'early ' * (i % 5)}spring?" for i in range(16)]
    lengths = [8 + (i * 3) % 17 for i in range(16)]

    async def one(c: openai.AsyncOpenAI, i: int) -> tuple[str, int]:
        if i % 2:
            resp = await c.completions.create(
                model="tiny", prompt=prompts[i], max_tokens=lengths[i], temperature=0, extra_body=NO_EOS
            )
            assert resp.usage is not None
            return resp.choices[0].text, resp.usage.completion_tokens
        stream = await c.completions.create(
            model="tiny",
            prompt=prompts[i],
            max_tokens=lengths[i],
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
        )
        text, used = "", -1
        async for ch in stream:
            if ch.choices:
                text += ch.choices[0].text
            if ch.usage:
                used = ch.usage.completion_tokens
        return text, used

    async def run_all() -> list[tuple[str, int]]:
        c = openai.AsyncOpenAI(base_url=runtime_server.api_url, api_key="x", max_retries=0, timeout=120)
        try:
            return await asyncio.gather(*(one(c, i) for i in range(16)))
        finally:
            await c.close()

    before = runtime_server.metrics()
    results = asyncio.run(run_all())
    for i, (text, used) in enumerate(results):
        assert used == lengths[i]
        assert text == reference_text(reference_model, tokenizer(prompts[i])["input_ids"], lengths[i]), i
    after = runtime_server.metrics()
    assert (
        after['hangar_runtime_requests_total{status="200"}'] - before['hangar_runtime_requests_total{status="200"}']
        == 16
    )
    assert after["hangar_runtime_requests_in_flight"] == 0


def test_stop_string_and_seed(runtime_server: RuntimeServer) -> None:
    c = client(runtime_server)
    base = c.completions.create(model="tiny", prompt="The ferry", max_tokens=30, temperature=0, extra_body=NO_EOS)
    text = base.choices[0].text
    stop = text[10:13]
    assert stop.strip()
    stopped = c.completions.create(
        model="tiny", prompt="The ferry", max_tokens=30, temperature=0, stop=[stop], extra_body=NO_EOS
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].text == text[: text.index(stop)]

    def sample(seed: int) -> str:
        r = c.completions.create(
            model="tiny", prompt="The ferry", max_tokens=20, temperature=1.0, top_p=0.95, seed=seed, extra_body=NO_EOS
        )
        return r.choices[0].text

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)


BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown model", {"model": "gpt-17"}, "model"),
    ("negative max_tokens", {"max_tokens": -5}, "max_tokens"),
    ("string max_tokens", {"max_tokens": "ten"}, "max_tokens"),
    ("temperature too high", {"temperature": 3.5}, "temperature"),
    ("top_p too high", {"top_p": 1.5}, "top_p"),
    ("n above the limit", {"n": 9}, "n"),
    ("messages wrong type", {"messages": "hello"}, "messages"),
    ("bad role", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("stream_options without stream", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("too many stops", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("logprobs wrong type", {"logprobs": "yes"}, "logprobs"),
    ("penalty out of range", {"presence_penalty": 3.0}, "presence_penalty"),
    ("seed wrong type", {"seed": 1.5}, "seed"),
    ("max_tokens beyond context", {"max_tokens": 5000}, "max_tokens"),
]


@pytest.mark.parametrize(("case", "override", "param"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_chat_requests_get_openai_400s(
    runtime_server: RuntimeServer, case: str, override: dict[str, Any], param: str
) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, **override}
    with pytest.raises(openai.BadRequestError) as info:
        client(runtime_server).post("/chat/completions", body=body, cast_to=httpx.Response)
    err = info.value
    assert err.status_code == 400
    payload = err.response.json()["error"]
    assert set(payload) == {"message", "type", "param", "code"}
    assert payload["type"] == "invalid_request_error"
    assert payload["param"] == param
    assert payload["message"]


def test_prompt_longer_than_context_is_400(runtime_server: RuntimeServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(runtime_server).completions.create(model="tiny", prompt=[7] * 2100, max_tokens=1)
    assert info.value.response.json()["error"]["code"] == "context_length_exceeded"


def test_raw_http_errors(runtime_server: RuntimeServer) -> None:
    url = runtime_server.api_url + "/chat/completions"
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]})
    resp = httpx.post(url, content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"
    resp = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"
    resp = httpx.post(url, json=[1, 2, 3])
    assert resp.status_code == 400
    resp = httpx.post(runtime_server.api_url + "/completions", json={"model": "tiny", "prompt": [99999]})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "prompt"


def test_metrics_move_as_requests_are_served(runtime_server: RuntimeServer) -> None:
    before = runtime_server.metrics()
    resp = client(runtime_server).completions.create(
        model="tiny", prompt="Simple instructions", max_tokens=12, temperature=0, extra_body=NO_EOS
    )
    after = runtime_server.metrics()
    assert resp.usage is not None

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("hangar_runtime_prompt_tokens_total") == resp.usage.prompt_tokens
    assert delta("hangar_runtime_completion_tokens_total") == 12
    assert delta('hangar_runtime_requests_total{status="200"}') == 1
    assert delta("hangar_runtime_time_to_first_token_seconds_count") == 1
    assert delta("hangar_runtime_e2e_latency_seconds_count") == 1
    assert delta("hangar_runtime_inter_token_latency_seconds_count") == 11
    assert after['hangar_runtime_memory_bytes{kind="rss"}'] > 50 * 1024 * 1024
    assert after["hangar_runtime_model_weights_bytes"] > 10 * 1024 * 1024
    assert after["hangar_runtime_requests_in_flight"] == 0
    assert after["hangar_runtime_batch_size"] == 0
    assert after["hangar_runtime_queue_depth"] == 0
    for name in ("hangar_runtime_time_to_first_token_seconds", "hangar_runtime_e2e_latency_seconds"):
        assert f'{name}_bucket{{le="+Inf"}}' in after


def _idle(server: RuntimeServer) -> bool:
    m = server.metrics()
    return m["hangar_runtime_requests_in_flight"] == 0 and m["hangar_runtime_batch_size"] == 0


def test_streaming_client_disconnect_frees_its_slot(runtime_server: RuntimeServer) -> None:
    start = runtime_server.metrics()
    before = start.get('hangar_runtime_requests_total{status="499"}', 0.0)
    body = {"model": "tiny", "prompt": "A long story", "max_tokens": 2000, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", runtime_server.api_url + "/completions", json=body, timeout=30) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        assert runtime_server.metrics()["hangar_runtime_requests_in_flight"] == 1
    # Leaving the block closed the connection mid-stream.
    wait_for(lambda: _idle(runtime_server), 20, "in-flight and batch size back to 0")
    after = runtime_server.metrics()
    assert after['hangar_runtime_requests_total{status="499"}'] == before + 1
    generated = after["hangar_runtime_completion_tokens_total"] - start["hangar_runtime_completion_tokens_total"]
    assert generated < 2000, "the sequence was stopped, not run to max_tokens"


def test_non_streaming_client_disconnect_frees_its_slot(runtime_server: RuntimeServer) -> None:
    body = {"model": "tiny", "prompt": "Another long story", "max_tokens": 2000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(runtime_server.api_url + "/completions", json=body, timeout=httpx.Timeout(5.0, read=0.5))
    wait_for(lambda: _idle(runtime_server), 20, "in-flight and batch size back to 0")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
    "stop", "seed", "stream", "stream_options", "logprobs", "presence_penalty", "ignore_eos", "response_format",
]  # fmt: skip


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(["completions", "chat/completions"]), field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_client_input_never_causes_a_500(runtime_server: RuntimeServer, endpoint: str, field: str, value: Any) -> None:
    """Any value in any field: the answer is a success or an OpenAI-style 4xx, never a 5xx."""
    body: dict[str, Any] = {"model": "tiny", "max_tokens": 3, "temperature": 0}
    body["prompt" if endpoint == "completions" else "messages"] = (
        "hi" if endpoint == "completions" else [{"role": "user", "content": "hi"}]
    )
    body[field] = value
    if field in ("max_tokens", "max_completion_tokens") and isinstance(value, int) and value > 16:
        body[field] = 16  # keep the run short; large values are covered by the context-limit tests
    resp = httpx.post(f"{runtime_server.api_url}/{endpoint}", content=json.dumps(body), timeout=60)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
