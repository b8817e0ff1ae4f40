"""Validation of the OpenAI fields beyond plain generation: n, logprobs, penalties, logit_bias,
min_tokens, response_format, tools and tool_choice.

Every field has a hard limit (a hostile client must not be able to make the runtime compile a
megabyte schema or return a thousand choices); violations are 400s in OpenAI's error shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.runtime.protocol import ApiError

MAX_N = 8
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5  # OpenAI's limit for /v1/completions
MAX_LOGIT_BIAS = 300
MAX_TOOLS = 64
MAX_PARALLEL_TOOL_CALLS = 8
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Tool:
    """One function the model may call."""

    name: str
    parameters: dict[str, Any]
    strict: bool


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """What the answer must look like.

    ``kind``: ``text`` (free), ``json_object``, ``json_schema``, ``tool_call`` (the arguments of
    ``function``, forced by a named ``tool_choice``) or ``tool_calls`` (``required``: a JSON array of
    ``{"name", "arguments"}``).
    """

    kind: str = "text"
    schema: dict[str, Any] | None = None
    strict: bool = False
    function: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSettings:
    tools: tuple[Tool, ...] = ()
    choice: str = "none"  # none | auto | required | function
    function: str | None = None
    parallel: bool = True

    @property
    def active(self) -> bool:
        """Tools are rendered into the prompt and tool calls are parsed from the answer."""
        return bool(self.tools) and self.choice != "none"


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    from workers.runtime.protocol import ApiError  # protocol imports this module

    return ApiError(message, param=param, code=code)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(name, f"'{name}' must be a number, got {type(value).__name__}", "invalid_type")
    if not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be between {lo} and {hi}, got {value}")
    return float(value)


def _int(body: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"'{name}' must be an integer, got {type(value).__name__}", "invalid_type")
    if not lo <= value <= hi:
        raise invalid(name, f"'{name}' must be between {lo} and {hi}, got {value}")
    return int(value)


def penalties(body: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``SamplingParams``: penalties and the logit bias."""
    return {
        "presence_penalty": _number(body, "presence_penalty", 0.0, -2.0, 2.0),
        "frequency_penalty": _number(body, "frequency_penalty", 0.0, -2.0, 2.0),
        "repetition_penalty": _number(body, "repetition_penalty", 1.0, 0.01, 10.0),
        "logit_bias": logit_bias(body.get("logit_bias")),
    }


def logit_bias(value: Any) -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` with bias in [-100, 100]; ids are checked against the vocabulary later."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise invalid("logit_bias", "'logit_bias' must be an object mapping token ids to numbers", "invalid_type")
    if len(value) > MAX_LOGIT_BIAS:
        raise invalid("logit_bias", f"'logit_bias' may hold at most {MAX_LOGIT_BIAS} entries")
    out: list[tuple[int, float]] = []
    for key, bias in value.items():
        if not isinstance(key, str) or not key.isdigit() or len(key) > 9:
            raise invalid("logit_bias", f"'logit_bias' keys must be token ids, got {key!r}")
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
            raise invalid("logit_bias", "'logit_bias' values must be numbers between -100 and 100")
        out.append((int(key), float(bias)))
    return tuple(sorted(out))


def choices(body: dict[str, Any]) -> int:
    """``n``: how many choices to generate for the prompt."""
    return _int(body, "n", 1, 1, MAX_N)


def min_tokens(body: dict[str, Any]) -> int:
    """``min_tokens`` (vLLM's extension): end-of-sequence is blocked before this many tokens."""
    return _int(body, "min_tokens", 0, 0, 1_000_000)


def chat_logprobs(body: dict[str, Any]) -> int | None:
    """``logprobs`` + ``top_logprobs`` of a chat request: None (off) or the number of alternatives."""
    enabled = body.get("logprobs")
    if enabled is not None and not isinstance(enabled, bool):
        raise invalid("logprobs", "'logprobs' must be a boolean", "invalid_type")
    top = body.get("top_logprobs")
    if top is not None and not enabled:
        raise invalid("top_logprobs", "'top_logprobs' requires 'logprobs': true")
    if not enabled:
        return None
    return _int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS)


def completion_logprobs(body: dict[str, Any]) -> int | None:
    """``logprobs`` of a text completion: None (off) or the number of alternatives (0-5)."""
    if body.get("logprobs") is None:
        return None
    return _int(body, "logprobs", 0, 0, MAX_COMPLETION_LOGPROBS)


def response_format(body: dict[str, Any]) -> OutputFormat:
    """``response_format``: text, json_object or json_schema (``strict`` honoured)."""
    fmt = body.get("response_format")
    if fmt is None:
        return OutputFormat()
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid("response_format", "'response_format.type' must be 'text', 'json_object' or 'json_schema'")
    if fmt["type"] == "text":
        return OutputFormat()
    if fmt["type"] == "json_object":
        return OutputFormat(kind="json_object")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise invalid("response_format.json_schema", "'json_schema' must be an object with a 'name'", "invalid_type")
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        raise invalid("response_format.json_schema.schema", "'schema' must be a JSON Schema object", "invalid_type")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid("response_format.json_schema.strict", "'strict' must be a boolean", "invalid_type")
    return OutputFormat(kind="json_schema", schema=schema, strict=bool(strict))


def _tool(item: Any, i: int) -> Tool:
    param = f"tools[{i}]"
    if not isinstance(item, dict) or item.get("type") != "function" or not isinstance(item.get("function"), dict):
        raise invalid(param, f"{param} must be {{'type': 'function', 'function': {{...}}}}", "invalid_type")
    fn = item["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise invalid(f"{param}.function.name", "function names are 1-64 characters of a-z, A-Z, 0-9, _ and -")
    parameters = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict):
        raise invalid(f"{param}.function.parameters", "'parameters' must be a JSON Schema object", "invalid_type")
    strict = fn.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(f"{param}.function.strict", "'strict' must be a boolean", "invalid_type")
    return Tool(name=name, parameters=parameters, strict=bool(strict))


def tool_settings(body: dict[str, Any]) -> ToolSettings:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``."""
    raw = body.get("tools")
    if raw is not None and (not isinstance(raw, list) or len(raw) > MAX_TOOLS):
        raise invalid("tools", f"'tools' must be a list of at most {MAX_TOOLS} functions", "invalid_type")
    if body.get("functions") is not None:
        raise invalid("functions", "'functions' is deprecated and not supported; use 'tools'", "unsupported_parameter")
    tools = tuple(_tool(item, i) for i, item in enumerate(raw or []))
    if len({t.name for t in tools}) != len(tools):
        raise invalid("tools", "function names in 'tools' must be unique")
    parallel = body.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        raise invalid("parallel_tool_calls", "'parallel_tool_calls' must be a boolean", "invalid_type")
    choice = body.get("tool_choice", "auto" if tools else "none")
    if choice in ("none", "auto", "required"):
        if choice != "none" and not tools:
            raise invalid("tool_choice", f"tool_choice '{choice}' needs 'tools'")
        return ToolSettings(tools, choice, None, parallel)
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if name is None:
        raise invalid("tool_choice", "'tool_choice' must be 'none', 'auto', 'required' or a named function")
    if name not in {t.name for t in tools}:
        raise invalid("tool_choice", f"tool_choice names '{name}', which is not in 'tools'")
    return ToolSettings(tools, "function", name, parallel)


def tool_output(settings: ToolSettings) -> OutputFormat | None:
    """The forced output of ``required`` / a named function; None when the model is free."""
    if settings.choice == "function":
        tool = next(t for t in settings.tools if t.name == settings.function)
        return OutputFormat(kind="tool_call", schema=tool.parameters, strict=True, function=tool.name)
    if settings.choice != "required":
        return None
    calls = [
        {
            "type": "object",
            "properties": {"name": {"enum": [t.name]}, "arguments": t.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in settings.tools
    ]
    items = calls[0] if len(calls) == 1 else {"anyOf": calls}
    limit = MAX_PARALLEL_TOOL_CALLS if settings.parallel else 1
    schema = {"type": "array", "items": items, "minItems": 1, "maxItems": limit}
    return OutputFormat(kind="tool_calls", schema=schema, strict=True)
