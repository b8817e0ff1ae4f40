"""The official ``openai`` client against the gateway in front of the real runtime (tiny model)."""

from __future__ import annotations

import httpx
import openai
import pytest

from controlplane.deployments.models import Deployment
from controlplane.keys.models import ApiKey
from controlplane.usage.models import UsageRecord
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "max_tokens": 6, "extra_body": {"ignore_eos": True}}
MESSAGES = [{"role": "user", "content": "Tell me a story about a hangar."}]


def test_models_chat_completions_and_streams(gateway, runtime_server, make_key, serve_model) -> None:
    key, token = make_key()
    deployment = serve_model(key.tenant, "tiny", runtime_server.url)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0)
    direct = openai.OpenAI(base_url=f"{runtime_server.url}/v1", api_key="unused", max_retries=0)

    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"

    chat = client.chat.completions.create(model="tiny", messages=MESSAGES, **GREEDY)
    expected_chat = direct.chat.completions.create(model="tiny", messages=MESSAGES, **GREEDY)
    assert chat.choices[0].message.content == expected_chat.choices[0].message.content
    assert chat.usage is not None and expected_chat.usage is not None
    assert chat.usage.prompt_tokens == expected_chat.usage.prompt_tokens
    assert chat.usage.completion_tokens == 6

    text = client.completions.create(model="tiny", prompt="Once upon a time", **GREEDY)
    expected_text = direct.completions.create(model="tiny", prompt="Once upon a time", **GREEDY)
    assert text.choices[0].text == expected_text.choices[0].text
    assert text.usage is not None and expected_text.usage is not None
    assert text.usage.prompt_tokens == expected_text.usage.prompt_tokens

    # A stream the client asked usage for: the usage chunk comes last.
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6

    # A stream without usage: the gateway asked the runtime for it (to meter) but strips it.
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "stream": True,
            "temperature": 0,
            "max_tokens": 6,
            "ignore_eos": True,
        },
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    assert '"usage"' not in raw
    assert raw.rstrip().endswith("data: [DONE]")

    prompt_total = 3 * expected_chat.usage.prompt_tokens + expected_text.usage.prompt_tokens
    rows = wait_for(
        lambda: (
            list(UsageRecord.objects.filter(api_key=key))
            if sum(r.requests for r in UsageRecord.objects.filter(api_key=key)) == 4
            else None
        ),
        15,
        "4 requests metered",
    )
    assert {r.model for r in rows} == {"tiny"}
    assert all(r.tenant_id == key.tenant_id for r in rows)
    assert sum(r.prompt_tokens for r in rows) == prompt_total
    assert sum(r.completion_tokens for r in rows) == 4 * 6
    assert sum(r.errors for r in rows) == 0
    assert sum(r.latency_ms_sum for r in rows) > 0
    wait_for(lambda: ApiKey.objects.get(pk=key.pk).last_used_at is not None, 15, "the key's last_used_at")
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).last_request_at is not None, 15, "last_request_at")


def test_client_disconnect_cancels_the_upstream_generation(gateway, runtime_server, make_key, serve_model) -> None:
    key, token = make_key()
    serve_model(key.tenant, "tiny", runtime_server.url, max_tokens_cap=1024)

    def cancelled() -> float:
        text = httpx.get(f"{runtime_server.url}/metrics").text
        for line in text.splitlines():
            if line.startswith("hangar_runtime_requests_total") and 'status="499"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = cancelled()
    body = {"model": "tiny", "messages": MESSAGES, "stream": True, "max_tokens": 1000, "ignore_eos": True}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status_code == 200
        for _ in response.iter_bytes():
            break  # one chunk, then hang up long before 1000 tokens
    wait_for(lambda: cancelled() > before, 15, "the upstream generation cancelled (status 499)")


def test_structured_outputs_tools_and_n_through_the_gateway(gateway, runtime_server, make_key, serve_model) -> None:
    """The fields agents and structured-output clients send pass the gateway and are metered."""
    import json
    from typing import Literal

    from pydantic import BaseModel, Field

    class Mooring(BaseModel):
        pier: Literal["north", "south"]
        berth: int = Field(ge=1, le=40)
        vessel: str = Field(max_length=8)

    key, token = make_key()
    serve_model(key.tenant, "tiny", runtime_server.url, max_tokens_cap=512)
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0, timeout=120)

    parsed = client.beta.chat.completions.parse(
        model="tiny", messages=MESSAGES, response_format=Mooring, max_tokens=200, temperature=1.0, seed=1
    )
    assert isinstance(parsed.choices[0].message.parsed, Mooring)

    tool = {
        "type": "function",
        "function": {
            "name": "book_berth",
            "parameters": {
                "type": "object",
                "properties": {"berth": {"type": "integer", "minimum": 1, "maximum": 40}},
                "required": ["berth"],
                "additionalProperties": False,
            },
        },
    }
    called = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "book_berth"}},
        max_tokens=100,
    )
    calls = called.choices[0].message.tool_calls or []
    assert called.choices[0].finish_reason == "tool_calls"
    assert len(calls) == 1 and calls[0].type == "function"
    assert 1 <= json.loads(calls[0].function.arguments)["berth"] <= 40

    several = client.completions.create(
        model="tiny", prompt="Once upon a time", n=3, max_tokens=5, temperature=1.0, extra_body={"ignore_eos": True}
    )
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.usage is not None and several.usage.completion_tokens == 15

    expected = parsed.usage.completion_tokens + called.usage.completion_tokens + 15  # type: ignore[union-attr]
    wait_for(
        lambda: sum(r.completion_tokens for r in UsageRecord.objects.filter(api_key=key)) == expected,
        15,
        "all three requests metered, every choice counted",
    )
