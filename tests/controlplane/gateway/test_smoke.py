"""First light: a key, a deployment on the stub upstream, one chat completion through the gateway."""

from __future__ import annotations

import httpx

from tests.controlplane.gateway.conftest import auth


def test_chat_through_gateway(gateway, stub_upstream, make_key, serve_model) -> None:
    key, token = make_key()
    serve_model(key.tenant, "stub-model", stub_upstream.url)
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 8
