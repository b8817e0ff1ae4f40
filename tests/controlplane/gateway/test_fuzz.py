"""Property-based fuzzing of the Authorization header and of request bodies.

Only 400/401/404/413 answers (200 when the body happens to be valid), never a 500, always in
OpenAI's error shape, and never a key verified by anything but its exact token.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.core import secrets
from tests.controlplane.gateway.conftest import auth

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
ALPHANUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=0, max_size=40)


@pytest.fixture
def target(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key()
    serve_model(key.tenant, "m", stub_upstream.url, max_tokens_cap=64)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client, key, token


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}


def header_values(token: str):
    key_id = token.split("_")[1]

    def mutate(data):
        index, char = data
        i = index % len(token)
        return token[:i] + char + token[i + 1 :]

    def forged(secret: str) -> str:
        body = f"hgr_{key_id}_{(secret + 'x' * 32)[:32]}"
        return body + secrets._checksum(body)  # checksum right, secret wrong

    printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
    return st.one_of(
        printable,
        printable.map(lambda s: "Bearer " + s),
        st.tuples(st.integers(0, 10_000), st.sampled_from("aZ9_-x0")).map(mutate).map(lambda s: "Bearer " + s),
        ALPHANUM.map(forged).map(lambda s: "Bearer " + s),
        st.sampled_from(["Bearer", "bearer " + token[:-1], "Bearer  " + token + " x", "Token " + token]),
    )


def test_fuzz_authorization_header(target) -> None:
    client, _, token = target
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    @FUZZ
    @given(value=header_values(token))
    def check(value: str) -> None:
        value = value.strip()
        for request in (
            lambda: client.get("/v1/models", headers={"Authorization": value}),
            lambda: client.post("/v1/chat/completions", json=body, headers={"Authorization": value}),
        ):
            response = request()
            if value in (f"Bearer {token}", f"bearer {token}"):
                assert response.status_code == 200
                continue
            assert response.status_code == 401, (value, response.status_code, response.text)
            assert_error_shape(response)

    check()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
messages = st.one_of(
    json_values,
    st.lists(
        st.fixed_dictionaries(
            {"role": st.one_of(st.sampled_from(["user", "system", "assistant"]), json_values)},
            optional={"content": st.one_of(st.text(max_size=50), json_values)},
        ),
        max_size=3,
    ),
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["m", "unknown", ""]), json_values),
        "messages": messages,
        "prompt": st.one_of(st.text(max_size=50), st.lists(st.integers(-5, 70000), max_size=5), json_values),
        "max_tokens": st.one_of(st.integers(-10, 10_000), json_values),
        "max_completion_tokens": st.one_of(st.integers(-10, 100), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), json_values),
        "temperature": st.one_of(st.floats(-1, 3), json_values),
        "n": st.one_of(st.integers(-1, 3), json_values),
    },
)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_fuzz_request_bodies(target, path) -> None:
    client, _, token = target

    @FUZZ
    @given(body=st.one_of(bodies, json_values, st.binary(max_size=300).map(lambda b: ("raw", b))))
    def check(body) -> None:
        raw = isinstance(body, tuple) and body[:1] == ("raw",)
        content = body[1] if raw else json.dumps(body).encode()
        response = client.post(path, content=content, headers={**auth(token), "Content-Type": "application/json"})
        assert response.status_code in (200, 400, 404, 413), (body, response.status_code, response.text)
        if response.status_code != 200:
            assert_error_shape(response)

    check()


def test_oversized_and_malformed_bodies(target) -> None:
    client, _, token = target
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * (1024 * 1024) + b'"}]}'
    response = client.post("/v1/chat/completions", content=big, headers=auth(token))
    assert response.status_code == 413
    assert_error_shape(response)

    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = client.post("/v1/chat/completions", content=chunks(), headers=auth(token))  # chunked, no length
    assert response.status_code == 413

    deep = b"[" * 100_000 + b"]" * 100_000
    assert client.post("/v1/chat/completions", content=deep, headers=auth(token)).status_code == 400
    cases = [
        (b"", 400, None),
        (b"{", 400, None),
        (b"[]", 400, None),
        (json.dumps({"messages": []}).encode(), 400, "model"),
        (json.dumps({"model": "m"}).encode(), 400, "messages"),
        (json.dumps({"model": "m", "messages": "hi"}).encode(), 400, "messages"),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 65}).encode(),
            400,
            "max_tokens",
        ),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": True}).encode(),
            400,
            "max_tokens",
        ),
        (
            json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(),
            400,
            "stream",
        ),
        (json.dumps({"model": "zzz", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "model"),
    ]
    for content, status, param in cases:
        response = client.post("/v1/chat/completions", content=content, headers=auth(token))
        assert response.status_code == status, (content[:80], response.text)
        if param:
            assert response.json()["error"]["param"] == param
    assert client.get("/v1/chat/completions", headers=auth(token)).status_code == 405
    assert client.get("/v1/nothing", headers=auth(token)).status_code == 404
