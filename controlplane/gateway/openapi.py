"""The gateway's own OpenAPI document, served at ``GET /v1/openapi.json``.

It describes what the gateway itself accepts and answers: the fields it validates before routing
(``controlplane.gateway.requests``), every error it can answer in OpenAI's shape
(``controlplane.gateway.errors``), and the model list. Other OpenAI parameters (``temperature``,
``stop``, ...) pass through to the model runtime, which answers its own 400s in the same shape;
the request schemas leave them open (``additionalProperties``).

``tests/controlplane/core/test_schemathesis.py`` runs schemathesis against this document and the live gateway.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from controlplane.gateway.embeddings import MAX_INPUTS
from controlplane.gateway.requests import MAX_MESSAGES, MAX_MODEL_NAME

JSON = "application/json"
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": ERROR_REF}}}
    if retry_after:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
        }
    return response


ERRORS: dict[str, dict[str, Any]] = {
    "400": _error("The body is not a JSON object, or a field the gateway checks is invalid (`param` names it)."),
    "401": _error("No API key, or an invalid, revoked or expired one."),
    "403": _error("The API key lacks the scope this endpoint needs."),
    "404": _error("No such model served for this key's tenant, or not one of the key's allowed models."),
    "413": _error("The request body is larger than the gateway's limit."),
    "429": _error(
        "A rate limit (requests or tokens per minute) or the monthly token budget is spent.", retry_after=True
    ),
    "500": _error("An unexpected failure; the message repeats the request id of the server's log lines."),
    "503": _error("No replica of the model is ready, or the gateway cannot reach its database.", retry_after=True),
}

_NULLABLE_POSITIVE_INT = {"type": ["integer", "null"], "minimum": 1}

_STREAM_FIELDS: dict[str, Any] = {
    "stream": {"type": ["boolean", "null"], "description": "Answer as server-sent events."},
    "stream_options": {
        "type": ["object", "null"],
        "description": "Only with `stream: true`.",
        "properties": {"include_usage": {"type": ["boolean", "null"]}},
    },
}

# ``stream_options`` (not null) needs ``stream: true``.
_STREAM_OPTIONS_NEED_STREAM: dict[str, Any] = {
    "if": {"required": ["stream_options"], "properties": {"stream_options": {"type": "object"}}},
    "then": {"required": ["stream"], "properties": {"stream": {"const": True}}},
}

_MODEL = {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_NAME, "description": "A served model name."}

_TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer"}}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"type": "string", "const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": _MODEL,
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_MESSAGES,
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {
                        "role": {"type": "string"},
                        "content": {"type": ["string", "array", "null"]},
                    },
                },
            },
            "max_tokens": _NULLABLE_POSITIVE_INT,
            "max_completion_tokens": _NULLABLE_POSITIVE_INT,
            **_STREAM_FIELDS,
        },
        **_STREAM_OPTIONS_NEED_STREAM,
    },
    "CompletionRequest": {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            "model": _MODEL,
            "prompt": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    _TOKEN_IDS,
                    {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "integer"}}},
                ]
            },
            "max_tokens": _NULLABLE_POSITIVE_INT,
            **_STREAM_FIELDS,
        },
        **_STREAM_OPTIONS_NEED_STREAM,
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "description": "For models whose task is `embed`; `encoding_format` and `dimensions` are checked by the model.",
        "properties": {
            "model": _MODEL,
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_INPUTS,
                        "items": {"type": "string", "minLength": 1},
                    },
                    _TOKEN_IDS,
                    {"type": "array", "minItems": 1, "maxItems": MAX_INPUTS, "items": _TOKEN_IDS},
                ]
            },
        },
    },
    "Completion": {
        "type": "object",
        "description": "The model runtime's answer, relayed as it is (OpenAI's completion objects).",
    },
}


def _completion_operation(summary: str, request: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": request[0].lower() + request[1:].removesuffix("Request"),
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{request}"}}},
        },
        "responses": {
            "200": {
                "description": "The answer: a JSON object, or server-sent events with `stream: true`.",
                "content": {
                    JSON: {"schema": {"$ref": "#/components/schemas/Completion"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **ERRORS,
        },
    }


def _embedding_operation() -> dict[str, Any]:
    return {
        "summary": "Create embeddings",
        "operationId": "createEmbedding",
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/EmbeddingRequest"}}},
        },
        "responses": {
            "200": {
                "description": "The vectors (OpenAI's embedding list), relayed as the model runtime answered.",
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Completion"}}},
            },
            **ERRORS,
        },
    }


def _read_errors() -> dict[str, Any]:
    return {code: ERRORS[code] for code in ("401", "403", "500", "503")}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``/v1/*``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hangar gateway (OpenAI-compatible)",
            "version": "1",
            "description": "Inference with a Hangar API key (`hgr_...`). Errors use OpenAI's shape.",
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/chat/completions": {
                "post": _completion_operation("Create a chat completion", "ChatCompletionRequest")
            },
            "/v1/completions": {"post": _completion_operation("Create a completion", "CompletionRequest")},
            "/v1/embeddings": {"post": _embedding_operation()},
            "/v1/models": {
                "get": {
                    "summary": "List the models this key may use",
                    "operationId": "listModels",
                    "responses": {
                        "200": {
                            "description": "Served models of the key's tenant (only its allowed models, if set).",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/ModelList"}}},
                        },
                        **_read_errors(),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One model this key may use",
                    "operationId": "retrieveModel",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {
                            "description": "The model.",
                            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Model"}}},
                        },
                        "404": ERRORS["404"],
                        **_read_errors(),
                    },
                }
            },
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "hgr_<key id>_<secret><checksum>"}
            },
        },
    }


@cache
def document_bytes() -> bytes:
    return json.dumps(document()).encode()
