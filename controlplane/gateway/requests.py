"""Validation of the parts of a completion request the gateway acts on.

The gateway checks what it needs for routing, limits and metering (model, max_tokens, stream,
the prompt's size) and leaves the rest to the runtime, which answers its own 400s in the same
OpenAI shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from controlplane.gateway.errors import bad_request

MAX_MODEL_NAME = 256
MAX_MESSAGES = 10_000
# Upper bound of ``n`` the gateway reserves tokens for; the runtime enforces its own (lower) limit.
MAX_CHOICES = 128


@dataclass(slots=True)
class CompletionRequest:
    payload: dict[str, Any]
    model: str
    max_tokens: int | None
    stream: bool
    include_usage: bool
    prompt_estimate: int
    choices: int = 1  # ``n``: every choice may use max_tokens, so the reservation counts each


def _is_int(value: Any) -> bool:
    """An integer as JSON Schema counts them: ``3`` and ``3.0``, not ``true``."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _int_field(payload: dict[str, Any], name: str) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise bad_request(f"'{name}' must be an integer.", param=name, code="invalid_type")
    if value < 1:
        raise bad_request(f"'{name}' must be at least 1.", param=name)
    return int(value)


def _text_len(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return sum(len(p.get("text", "")) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def _choices(payload: dict[str, Any]) -> int:
    n = _int_field(payload, "n")
    if n is not None and n > MAX_CHOICES:
        raise bad_request(f"'n' must be at most {MAX_CHOICES}.", param="n")
    return n or 1


def _tools_estimate(payload: dict[str, Any]) -> int:
    """Tool definitions are rendered into the prompt by the chat template: count them too."""
    tools = payload.get("tools")
    if not isinstance(tools, list):
        return 0
    return len(json.dumps(tools)) // 4


def _estimate_chat(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array.", param="messages", code="invalid_type")
    if len(messages) > MAX_MESSAGES:
        raise bad_request(f"'messages' holds more than {MAX_MESSAGES} items.", param="messages")
    chars = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise bad_request(
                f"'messages[{index}]' must be an object with a string 'role'.",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise bad_request(
                f"'messages[{index}].content' must be a string or an array.",
                param=f"messages[{index}].content",
                code="invalid_type",
            )
        chars += _text_len(content) + 16  # role and template overhead
    return chars // 4 + 1


def _estimate_prompt(prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(prompt) // 4 + 1
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(len(p) for p in prompt) // 4 + 1
        if all(_is_int(p) for p in prompt):
            return len(prompt)
        if all(isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt):
            return sum(len(p) for p in prompt)
    raise bad_request(
        "'prompt' must be a string, an array of strings or an array of token ids.", param="prompt", code="invalid_type"
    )


def _payload(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise bad_request("We could not parse the JSON body of your request.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return payload


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required and must be a string.", param="model", code="invalid_type")
    if len(model) > MAX_MODEL_NAME:
        raise bad_request("'model' is too long.", param="model")
    return model


def _prompt_estimate(payload: dict[str, Any], *, chat: bool) -> int:
    name = "messages" if chat else "prompt"
    if name not in payload:
        raise bad_request(f"'{name}' is required.", param=name, code="missing_required_parameter")
    return _estimate_chat(payload[name]) if chat else _estimate_prompt(payload[name])


def _max_tokens(payload: dict[str, Any], *, chat: bool) -> int | None:
    max_tokens = _int_field(payload, "max_tokens")
    completion_tokens = _int_field(payload, "max_completion_tokens") if chat else None
    if completion_tokens is None:
        return max_tokens
    return completion_tokens if max_tokens is None else min(max_tokens, completion_tokens)


def _include_usage(payload: dict[str, Any], stream: bool) -> bool:
    options = payload.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", param="stream_options", code="invalid_type")
    flag = options.get("include_usage")
    if flag is not None and not isinstance(flag, bool):
        raise bad_request(
            "'stream_options.include_usage' must be a boolean.",
            param="stream_options.include_usage",
            code="invalid_type",
        )
    return bool(flag)


def parse_completion(body: bytes, *, chat: bool) -> CompletionRequest:
    payload = _payload(body)
    model = _model(payload)
    estimate = _prompt_estimate(payload, chat=chat) + (_tools_estimate(payload) if chat else 0)
    max_tokens = _max_tokens(payload, chat=chat)
    stream = payload.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean.", param="stream", code="invalid_type")
    return CompletionRequest(
        payload=payload,
        model=model,
        max_tokens=max_tokens,
        stream=bool(stream),
        include_usage=_include_usage(payload, bool(stream)),
        prompt_estimate=estimate,
        choices=_choices(payload),
    )
