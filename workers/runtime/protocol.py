"""OpenAI request validation and response shapes for the runtime's HTTP API.

Validation is hand-written (no pydantic in the runtime image) and strict about the things we
cannot honour: a parameter we would silently ignore is rejected with a 400 instead, so a client
never believes it got behaviour it did not get. Unknown extra fields are ignored, as OpenAI
clients send vendor extensions freely. ``ignore_eos`` is accepted as an extension (the same
name vLLM uses) for benchmarks.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from workers.runtime import features
from workers.runtime.features import OutputFormat, ToolSettings
from workers.runtime.sampling import SamplingParams

RETRY_AFTER_SECONDS = "1"  # for every 503: queue full, loading, draining
MAX_STOP_SEQUENCES = 4
MAX_STOP_LENGTH = 256
SEED_RANGE = (-(2**63), 2**64 - 1)


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI clients parse."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(message, param=param, code=code)


@dataclass(frozen=True, slots=True)
class CommonParams:
    """Parameters shared by chat and text completions."""

    model: str
    max_tokens: int | None
    sampling: SamplingParams
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    ignore_eos: bool
    n: int = 1
    min_tokens: int = 0
    logprobs: int | None = None  # None: off; k: chosen token plus k alternatives


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated ``/v1/chat/completions`` body."""

    messages: list[dict[str, Any]]
    params: CommonParams
    output: OutputFormat = field(default_factory=OutputFormat)
    tools: ToolSettings = field(default_factory=ToolSettings)


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    """A validated ``/v1/completions`` body; ``prompt`` is text or token ids."""

    prompt: str | list[int]
    params: CommonParams


# ------------------------------------------------------------------- field readers


def _get_int(body: dict[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int subclass in Python; `"max_tokens": true` is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(name, f"'{name}' must be an integer, got {type(value).__name__}", "invalid_type")
    if minimum is not None and value < minimum:
        raise _invalid(name, f"'{name}' must be >= {minimum}, got {value}")
    return int(value)


def _get_number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(name, f"'{name}' must be a number, got {type(value).__name__}", "invalid_type")
    if not lo <= value <= hi:
        raise _invalid(name, f"'{name}' must be between {lo} and {hi}, got {value}")
    return float(value)


def _get_bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(name, f"'{name}' must be a boolean, got {type(value).__name__}", "invalid_type")
    return value


def _common(body: dict[str, Any], served_model: str, *, max_tokens_names: tuple[str, ...]) -> CommonParams:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "'model' is required and must be a string", "invalid_type")
    if model != served_model:
        raise ApiError(
            f"The model '{model}' does not exist; this server serves '{served_model}'",
            param="model",
            code="model_not_found",
        )

    max_tokens: int | None = None
    for name in max_tokens_names:
        value = _get_int(body, name, minimum=1)
        if value is not None:
            max_tokens = value

    temperature = _get_number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _get_number(body, "top_p", 1.0, 0.0, 1.0)
    seed = _get_int(body, "seed")
    if seed is not None and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise _invalid("seed", "'seed' is out of range")
    if seed is not None and seed < 0:
        seed %= 2**64  # torch.Generator wants a non-negative seed
    stop = _stop(body.get("stop"))

    stream = _get_bool(body, "stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise _invalid("stream_options", "'stream_options' is only allowed when 'stream' is true")
        if not isinstance(options, dict):
            raise _invalid("stream_options", "'stream_options' must be an object", "invalid_type")
        include_usage = _get_bool(options, "include_usage")
    return CommonParams(
        model=model,
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=temperature, top_p=top_p, seed=seed, **features.penalties(body)),
        stop=stop,
        stream=stream,
        include_usage=include_usage,
        ignore_eos=_get_bool(body, "ignore_eos"),
        n=features.choices(body),
        min_tokens=features.min_tokens(body),
    )


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise _invalid("stop", "'stop' must be a string or a list of strings", "invalid_type")
    if len(items) > MAX_STOP_SEQUENCES:
        raise _invalid("stop", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
    if any(len(s) > MAX_STOP_LENGTH for s in items):
        raise _invalid("stop", f"stop sequences are limited to {MAX_STOP_LENGTH} characters")
    return tuple(s for s in items if s)


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", code="invalid_json")
    return body


# ------------------------------------------------------------------- requests

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def parse_chat(body: Any, served_model: str) -> ChatRequest:
    """Validate a chat completion request body."""
    body = _require_object(body)
    params = _common(body, served_model, max_tokens_names=("max_tokens", "max_completion_tokens"))
    params = replace(params, logprobs=features.chat_logprobs(body))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _invalid("messages", "'messages' must be a non-empty list", "invalid_type")
    messages = [_message(m, i) for i, m in enumerate(raw)]
    tools = features.tool_settings(body)
    output = features.response_format(body)
    forced = features.tool_output(tools)
    if forced is not None:
        # A forced call answers with the call, constrained to the function's parameters, as
        # OpenAI does; ``response_format`` shapes the content of the turn after the tool's result.
        output = forced
    return ChatRequest(messages=messages, params=params, output=output, tools=tools)


def _message(m: Any, i: int) -> dict[str, Any]:
    param = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _invalid(param, f"{param} must be an object", "invalid_type")
    role = m.get("role")
    if role not in ROLES:
        raise _invalid(f"{param}.role", f"{param}.role must be one of {sorted(ROLES)}")
    content = m.get("content")
    if content is None:
        content = ""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _invalid(f"{param}.content[{j}]", "only text content parts are supported", "unsupported_value")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise _invalid(f"{param}.content", f"{param}.content must be a string or a list of text parts", "invalid_type")
    return _tool_fields(m, {"role": role, "content": content}, param)


def _tool_fields(m: dict[str, Any], message: dict[str, Any], param: str) -> dict[str, Any]:
    """Keep an assistant turn's tool calls and a tool turn's call id for the chat template."""
    role = message["role"]
    if role == "assistant" and m.get("tool_calls"):
        message["tool_calls"] = _tool_calls(m["tool_calls"], param)
    if role == "tool":
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid(f"{param}.tool_call_id", "tool messages need a 'tool_call_id'", "invalid_type")
        message["tool_call_id"] = call_id
    return message


def _tool_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    """An assistant turn's earlier tool calls, with arguments decoded for the chat template."""
    if not isinstance(calls, list) or len(calls) > features.MAX_PARALLEL_TOOL_CALLS * 4:
        raise _invalid(f"{param}.tool_calls", "'tool_calls' must be a list", "invalid_type")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
            raise _invalid(f"{param}.tool_calls[{j}]", "a tool call needs function.name and function.arguments strings")
        try:
            arguments = json.loads(fn["arguments"])
        except ValueError:
            arguments = fn["arguments"]
        out.append({"id": call.get("id"), "type": "function", "function": {"name": fn["name"], "arguments": arguments}})
    return out


def parse_completion(body: Any, served_model: str) -> CompletionRequest:
    """Validate a (legacy) text completion request body."""
    body = _require_object(body)
    params = _common(body, served_model, max_tokens_names=("max_tokens",))
    params = replace(params, logprobs=features.completion_logprobs(body))
    if _get_bool(body, "echo"):
        raise _invalid("echo", "'echo' is not supported by this runtime", "unsupported_parameter")
    best_of = _get_int(body, "best_of", minimum=1)
    if best_of not in (None, 1):
        raise _invalid("best_of", "only best_of=1 is supported", "unsupported_value")
    if body.get("suffix"):
        raise _invalid("suffix", "'suffix' is not supported by this runtime", "unsupported_parameter")
    return CompletionRequest(prompt=_prompt(body.get("prompt")), params=params)


def _prompt(value: Any) -> str | list[int]:
    # A batch of prompts would need n>1-style fan-out: accept only lists of length one.
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str | list):
        value = value[0]
    if isinstance(value, str):
        if not value:
            raise _invalid("prompt", "'prompt' must not be empty")
        return value
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return list(value)
    if isinstance(value, list) and len(value) > 1:
        raise _invalid("prompt", "only one prompt per request is supported", "unsupported_value")
    raise _invalid("prompt", "'prompt' must be a non-empty string or a list of token ids", "invalid_type")


# ------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    """A request id in OpenAI's style (``chatcmpl-...``, ``cmpl-...``)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def now() -> int:
    """Unix time for the ``created`` field."""
    return int(time.time())
