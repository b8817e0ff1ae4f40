"""``POST /v1/embeddings`` at the gateway: what it checks before routing, and which endpoint a
model's task serves.

The gateway validates the parts it acts on (model, the inputs' shape and size for the token
reservation) and leaves the rest (``encoding_format``, ``dimensions`` against the model's
width) to the replica, which answers its own 400s in the same OpenAI shape. A model serves
one task (``controlplane.catalog.choices.ModelTask``): asking an embedding model for a chat
completion, or a generative model for embeddings, is refused here with a 400 that says so,
before any token is reserved or any replica is bothered.
"""

from __future__ import annotations

from typing import Any

from controlplane.catalog.choices import ModelTask
from controlplane.gateway.errors import bad_request
from controlplane.gateway.requests import CompletionRequest, _is_int, _model, _payload
from controlplane.gateway.selectors import Route

PATH = "/v1/embeddings"
MAX_INPUTS = 2048  # OpenAI's limit per request
UNSUPPORTED_TASK = "unsupported_model_task"


def _texts(items: list[Any]) -> bool:
    return all(isinstance(item, str) and item for item in items)


def _token_lists(items: list[Any]) -> bool:
    return all(isinstance(item, list) and item and all(_is_int(t) for t in item) for item in items)


def _estimate(raw: Any) -> int:
    """Tokens to reserve for ``input``: ids count as themselves, text as characters / 4."""
    if isinstance(raw, str) and raw:
        return len(raw) // 4 + 1
    if isinstance(raw, list) and raw:
        if all(_is_int(t) for t in raw):
            return len(raw)
        if len(raw) > MAX_INPUTS:
            raise bad_request(f"'input' holds more than {MAX_INPUTS} items.", param="input")
        if _texts(raw):
            return sum(len(text) // 4 + 1 for text in raw)
        if _token_lists(raw):
            return sum(len(ids) for ids in raw)
    raise bad_request(
        "'input' must be a non-empty string, an array of non-empty strings, an array of token ids "
        "or an array of such arrays.",
        param="input",
        code="invalid_type",
    )


def parse_embeddings(body: bytes) -> CompletionRequest:
    """The request as the gateway's proxy path carries it: never streamed, no completion tokens."""
    payload = _payload(body)
    model = _model(payload)
    if "input" not in payload:
        raise bad_request("'input' is required.", param="input", code="missing_required_parameter")
    return CompletionRequest(
        payload=payload,
        model=model,
        max_tokens=None,
        stream=False,
        include_usage=False,
        prompt_estimate=_estimate(payload["input"]),
    )


def check_task(route: Route, *, embeddings: bool) -> None:
    """400 unless ``route``'s model serves this kind of endpoint."""
    is_embedding_model = route.task == ModelTask.EMBED
    if embeddings and not is_embedding_model:
        raise bad_request(
            f"The model '{route.served_model_name}' is not an embedding model: "
            "use /v1/chat/completions or /v1/completions.",
            param="model",
            code=UNSUPPORTED_TASK,
        )
    if not embeddings and is_embedding_model:
        raise bad_request(
            f"The model '{route.served_model_name}' is an embedding model: it serves /v1/embeddings only.",
            param="model",
            code=UNSUPPORTED_TASK,
        )
