"""``/v1/embeddings`` of a ``--task embed`` replica, with the official ``openai`` client.

The vectors are checked against the same model loaded in-process with plain transformers
(``AutoModel`` + the pooling by hand), so pooling, normalization, Matryoshka truncation and
both encodings are measured against an independent computation, not against themselves.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.workers.runtime.conftest import RuntimeServer, start_server
from workers.runtime.embeddings import EmbeddingEngine, pooling_from_model_dir
from workers.runtime.tinymodel import HIDDEN_SIZE, build_tiny_embedding_model

pytestmark = pytest.mark.slow

TEXTS = ["The harbor at low tide", "boats lie down on their sides in the mud", "tar"]


@pytest.fixture(scope="session")
def embed_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_embedding_model(tmp_path_factory.mktemp("runtime-models") / "tiny-embed", seed=0)


@pytest.fixture(scope="session")
def embed_server(embed_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    server = start_server(embed_model_dir, tmp_path_factory.mktemp("embed-logs"), "--task", "embed", name="emb")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reference(embed_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embed_model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(embed_model_dir), local_files_only=True).eval()
    return model, tokenizer


def reference_vector(reference: tuple[Any, Any], text: str, pooling: str = "mean", dims: int = HIDDEN_SIZE) -> Any:
    """One text alone through plain transformers, pooled by hand, truncated, normalized."""
    import torch

    model, tokenizer = reference
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        hidden = model(input_ids=ids).last_hidden_state[0]
    pooled = {"mean": hidden.mean(dim=0), "last": hidden[-1], "cls": hidden[0]}[pooling][:dims].numpy()
    return pooled / np.linalg.norm(pooled)


def client(server: RuntimeServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key="unused", max_retries=0, timeout=60)


def test_builder_declares_mean_pooling_and_matryoshka(embed_model_dir: Path) -> None:
    assert pooling_from_model_dir(embed_model_dir) == "mean"
    config = json.loads((embed_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaModel"] and config["is_matryoshka"] is True
    marker = json.loads((embed_model_dir / "hangar-tinymodel.json").read_text())
    assert marker["task"] == "embed" and marker["random_weights"] is True


def test_float_and_base64_match_the_reference_with_usage(embed_server: RuntimeServer, reference: Any) -> None:
    _, tokenizer = reference
    floats = client(embed_server).embeddings.create(model="emb", input=TEXTS, encoding_format="float")
    raw = httpx.post(
        embed_server.api_url + "/embeddings",
        json={"model": "emb", "input": TEXTS, "encoding_format": "base64"},
        timeout=60,
    ).json()

    assert [d.index for d in floats.data] == [0, 1, 2]
    token_counts = [len(tokenizer(t)["input_ids"]) for t in TEXTS]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == sum(token_counts)
    assert raw["usage"]["prompt_tokens"] == sum(token_counts)
    for text, item, encoded in zip(TEXTS, floats.data, raw["data"], strict=True):
        vector = np.array(item.embedding)
        assert vector.shape == (HIDDEN_SIZE,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        # Batched with longer and shorter neighbours, yet the same as the text alone.
        np.testing.assert_allclose(vector, reference_vector(reference, text), atol=2e-5)
        decoded = np.frombuffer(base64.b64decode(encoded["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, vector, atol=1e-6)


def test_openai_client_default_encoding_is_base64_and_decoded(embed_server: RuntimeServer, reference: Any) -> None:
    # The openai client asks for base64 unless told otherwise and decodes it itself.
    answer = client(embed_server).embeddings.create(model="emb", input="tar")
    np.testing.assert_allclose(answer.data[0].embedding, reference_vector(reference, "tar"), atol=2e-5)


def test_dimensions_truncate_and_renormalize(embed_server: RuntimeServer, reference: Any) -> None:
    answer = client(embed_server).embeddings.create(model="emb", input=TEXTS[0], dimensions=64, encoding_format="float")
    vector = np.array(answer.data[0].embedding)
    assert vector.shape == (64,)
    np.testing.assert_allclose(vector, reference_vector(reference, TEXTS[0], dims=64), atol=2e-5)

    with pytest.raises(openai.BadRequestError) as info:
        client(embed_server).embeddings.create(model="emb", input="x", dimensions=HIDDEN_SIZE + 1)
    assert info.value.body["param"] == "dimensions"  # type: ignore[index]
    assert f"above this model's {HIDDEN_SIZE}" in info.value.body["message"]  # type: ignore[index]


def test_token_id_inputs_equal_their_text(embed_server: RuntimeServer, reference: Any) -> None:
    _, tokenizer = reference
    ids = tokenizer(TEXTS[1])["input_ids"]
    by_ids = client(embed_server).embeddings.create(model="emb", input=[ids], encoding_format="float")
    by_text = client(embed_server).embeddings.create(model="emb", input=TEXTS[1], encoding_format="float")
    np.testing.assert_allclose(by_ids.data[0].embedding, by_text.data[0].embedding, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "emb"}, "input"),
        ({"model": "emb", "input": ""}, "input"),
        ({"model": "emb", "input": []}, "input"),
        ({"model": "emb", "input": ["ok", 3]}, "input"),
        ({"model": "emb", "input": ["x"] * 2049}, "input"),
        ({"model": "emb", "input": [[5, 999999]]}, "input"),
        ({"model": "emb", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "emb", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "emb", "input": "x", "dimensions": True}, "dimensions"),
        ({"model": "other", "input": "x"}, "model"),
    ],
)
def test_bad_requests_are_400(embed_server: RuntimeServer, body: dict[str, Any], param: str) -> None:
    response = httpx.post(embed_server.api_url + "/embeddings", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_an_embedding_replica_refuses_completions(embed_server: RuntimeServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(embed_server).chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "unsupported_model_task"
    assert "embedding model" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        client(embed_server).completions.create(model="emb", prompt="hi")


def test_a_generative_replica_refuses_embeddings(runtime_server: RuntimeServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(runtime_server).embeddings.create(model="tiny", input="hello")
    assert info.value.code == "unsupported_model_task"
    assert "not an embedding model" in str(info.value)


def test_dimensions_refused_without_matryoshka(embed_model_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(embed_model_dir, plain)
    config = json.loads((plain / "config.json").read_text())
    config.pop("is_matryoshka")
    (plain / "config.json").write_text(json.dumps(config))
    server = start_server(plain, tmp_path, "--task", "embed", "--pooling", "last", name="plain")
    try:
        server.wait_ready()
        with pytest.raises(openai.BadRequestError) as info:
            client(server).embeddings.create(model="plain", input="x", dimensions=32)
        assert "does not support 'dimensions'" in str(info.value)
        full = client(server).embeddings.create(model="plain", input="x", dimensions=HIDDEN_SIZE)
        assert len(full.data[0].embedding) == HIDDEN_SIZE
    finally:
        server.stop()


@pytest.mark.parametrize("pooling", ["last", "cls"])
def test_engine_pooling_modes_match_the_reference(reference: Any, pooling: str) -> None:
    model, tokenizer = reference
    engine = EmbeddingEngine(model, pooling=pooling, pad_token_id=tokenizer.pad_token_id)
    rows = engine.embed([tokenizer(t)["input_ids"] for t in TEXTS]).numpy()  # one right-padded batch
    for text, row in zip(TEXTS, rows, strict=True):
        np.testing.assert_allclose(row / np.linalg.norm(row), reference_vector(reference, text, pooling), atol=2e-5)
