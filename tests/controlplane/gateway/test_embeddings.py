"""``/v1/embeddings`` through the gateway with the official ``openai`` client, in front of a real
``--task embed`` runtime (the tiny embedding model): keys, scopes, limits, metering, and the
400s that keep each model to its task."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from controlplane.usage.models import UsageRecord
from tests.controlplane.gateway.conftest import Server
from tests.support.ports import free_port
from tests.support.processes import http_ok
from tests.support.waiting import wait_for
from workers.runtime.tinymodel import HIDDEN_SIZE, build_tiny_embedding_model

pytestmark = pytest.mark.slow

TEXTS = ["The harbor at low tide", "the gulls walk about on the flats"]


@pytest.fixture(scope="module")
def embedding_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model_dir = build_tiny_embedding_model(tmp_path_factory.mktemp("embed-model") / "tiny-embed")
    port = free_port()
    argv = [sys.executable, "-m", "workers.runtime", "--model", str(model_dir), "--port", str(port)]
    argv += ["--served-model-name", "emb", "--task", "embed", "--pooling", "mean"]
    log_path = tmp_path_factory.mktemp("embed-runtime") / "runtime.log"
    server = Server("embed-runtime", argv, port, log_path=log_path).start()
    try:
        server.wait_ready(lambda: http_ok(server.url + "/health"), 180, "/health answering 200", interval=0.2)
        yield server
    finally:
        server.stop()


def embedding_model(serve_model, tenant, url: str, name: str = "emb"):  # type: ignore[no-untyped-def]
    return serve_model(tenant, name, url, model__task="embed", model__pooling="mean")


def clients(gateway: Server, runtime: Server, token: str) -> tuple[openai.OpenAI, openai.OpenAI]:
    through = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=token, max_retries=0, timeout=60)
    direct = openai.OpenAI(base_url=f"{runtime.url}/v1", api_key="unused", max_retries=0, timeout=60)
    return through, direct


def test_embeddings_float_and_base64_through_the_gateway_are_metered(
    gateway, embedding_runtime, make_key, serve_model
) -> None:
    key, token = make_key()
    embedding_model(serve_model, key.tenant, embedding_runtime.url)
    client, direct = clients(gateway, embedding_runtime, token)

    floats = client.embeddings.create(model="emb", input=TEXTS, encoding_format="float")
    expected = direct.embeddings.create(model="emb", input=TEXTS, encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [HIDDEN_SIZE, HIDDEN_SIZE]
    for got, want in zip(floats.data, expected.data, strict=True):
        np.testing.assert_allclose(got.embedding, want.embedding, atol=1e-7)
        assert np.linalg.norm(got.embedding) == pytest.approx(1.0, abs=1e-5)
    assert floats.usage.prompt_tokens == expected.usage.prompt_tokens > 0

    # The client's default asks for base64 and decodes it; the raw answer is base64 too.
    decoded = client.embeddings.create(model="emb", input=TEXTS)
    np.testing.assert_allclose(decoded.data[1].embedding, expected.data[1].embedding, atol=1e-6)
    raw = client.embeddings.with_raw_response.create(model="emb", input=TEXTS[0], encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    vector = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_allclose(vector, expected.data[0].embedding, atol=1e-6)

    short = client.embeddings.create(model="emb", input=TEXTS[0], dimensions=32, encoding_format="float")
    assert len(short.data[0].embedding) == 32

    one = direct.embeddings.create(model="emb", input=TEXTS[0], encoding_format="float").usage.prompt_tokens
    prompt_total = 2 * expected.usage.prompt_tokens + 2 * one
    rows = wait_for(
        lambda: (
            list(UsageRecord.objects.filter(api_key=key))
            if sum(r.requests for r in UsageRecord.objects.filter(api_key=key)) == 4
            else None
        ),
        15,
        "4 requests metered",
    )
    assert {r.model for r in rows} == {"emb"}
    assert sum(r.prompt_tokens for r in rows) == prompt_total
    assert sum(r.completion_tokens for r in rows) == 0
    assert sum(r.errors for r in rows) == 0


def test_each_model_keeps_to_its_task(gateway, embedding_runtime, runtime_server, make_key, serve_model) -> None:
    key, token = make_key()
    embedding_model(serve_model, key.tenant, embedding_runtime.url)
    serve_model(key.tenant, "tiny", runtime_server.url)
    client, _ = clients(gateway, embedding_runtime, token)

    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="tiny", input="hello")
    assert refused.value.code == "unsupported_model_task"
    assert "'tiny' is not an embedding model" in refused.value.message

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert refused.value.code == "unsupported_model_task"
    assert "'emb' is an embedding model" in refused.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="emb", prompt="hi", max_tokens=4)

    # The replica's own check says the same if a route is stale (the model's task changed).
    direct = openai.OpenAI(base_url=f"{runtime_server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        direct.embeddings.create(model="tiny", input="hello")
    assert refused.value.code == "unsupported_model_task"

    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="emb", input=[])
    assert refused.value.param == "input"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="hello")


def test_embeddings_need_the_scope_and_obey_limits(gateway, embedding_runtime, make_key, serve_model) -> None:
    key, token = make_key(scopes=["inference", "models:read"])
    embedding_model(serve_model, key.tenant, embedding_runtime.url)
    client, _ = clients(gateway, embedding_runtime, token)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.embeddings.create(model="emb", input="hello")
    assert "'embeddings' scope" in denied.value.message

    limited, limited_token = make_key(tenant=key.tenant, rpm_limit=1)
    client, _ = clients(gateway, embedding_runtime, limited_token)
    client.embeddings.create(model="emb", input="hello", encoding_format="float")
    with pytest.raises(openai.RateLimitError) as limited_out:
        client.embeddings.create(model="emb", input="hello", encoding_format="float")
    assert limited_out.value.response.headers.get("retry-after")
    wait_for(
        lambda: sum(r.errors for r in UsageRecord.objects.filter(api_key=limited)) == 1 or None,
        15,
        "the refused request metered as an error",
    )


def test_registering_a_sentence_transformers_directory_marks_it_embed(tmp_path: Path) -> None:
    from controlplane.catalog.store.metadata import inspect_source
    from workers.runtime.store.resolvers import FileResolver

    info = inspect_source(FileResolver(build_tiny_embedding_model(tmp_path / "m")))
    assert (info.task, info.pooling, info.random_weights) == ("embed", "mean", True)
