"""Turning engine outputs into OpenAI choices: text, tool calls and log probabilities.

Tool calls come back in two ways. With ``tool_choice`` ``required`` or a named function the
answer was constrained by the grammar to JSON (an array of ``{"name", "arguments"}`` or the
named function's arguments), so it is parsed directly. With ``auto`` the model writes
Hermes-style ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` blocks (the format the
chat template shows it) which are parsed out of the text; anything that does not parse is
left as ordinary content.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workers.runtime.features import OutputFormat, ToolSettings

TOOL_CALL_OPEN = "<tool_call>"
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)

Decode = Callable[[int], str]


@dataclass
class ChoiceState:
    """Everything one choice has produced so far."""

    index: int
    pieces: list[str] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def _call(name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": "call_" + uuid.uuid4().hex[:24], "type": "function", "function": {"name": name, "arguments": text}}


def parse_tool_calls(text: str, output: OutputFormat, tools: ToolSettings) -> list[dict[str, Any]] | None:
    """The answer's tool calls, or None if it is plain content."""
    if output.kind == "tool_call" and output.function is not None:
        return [_call(output.function, text)]
    if output.kind == "tool_calls":
        try:
            items = json.loads(text)
        except ValueError:
            return None  # cut short by max_tokens: returned as content, finish_reason "length"
        return [_call(item["name"], item["arguments"]) for item in items]
    if not tools.active:
        return None
    names = {t.name for t in tools.tools}
    calls = []
    for block in _TOOL_CALL_BLOCK.findall(text):
        try:
            item = json.loads(block)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("name") in names and isinstance(item.get("arguments"), dict | str):
            calls.append(_call(item["name"], item["arguments"]))
    if not calls:
        return None
    return calls if tools.parallel else calls[:1]


def holds_back(text: str, output: OutputFormat, tools: ToolSettings) -> bool:
    """Whether a stream must hold this choice's text back because it may be a tool call."""
    if output.kind in ("tool_call", "tool_calls"):
        return True
    if not tools.active:
        return False
    stripped = text.lstrip()
    return TOOL_CALL_OPEN.startswith(stripped[: len(TOOL_CALL_OPEN)]) or TOOL_CALL_OPEN in text


def tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls as streamed ``delta.tool_calls`` items (each complete in one delta)."""
    return [{"index": i, **call} for i, call in enumerate(calls)]


def _token_entry(decode: Decode, token: int, logprob: float) -> dict[str, Any]:
    text = decode(token)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(entries: list[Any], decode: Decode) -> dict[str, Any]:
    """``choices[].logprobs`` of a chat completion."""
    content = []
    for token, logprob, top in entries:
        item = _token_entry(decode, token, logprob)
        item["top_logprobs"] = [_token_entry(decode, t, lp) for t, lp in top]
        content.append(item)
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[Any], decode: Decode, offset: int = 0) -> dict[str, Any]:
    """``choices[].logprobs`` of a text completion (the legacy shape)."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for token, logprob, top in entries:
        text = decode(token)
        tokens.append(text)
        token_logprobs.append(logprob)
        tops.append({decode(t): lp for t, lp in top})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}
