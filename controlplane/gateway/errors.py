"""Errors answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Messages never contain the presented key or anything else the client sent as a secret.
"""

from __future__ import annotations

import json


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return json.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        ).encode()


def bad_request(message: str, *, param: str | None = None, code: str | None = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def unauthorized(message: str, code: str = "invalid_api_key") -> GatewayError:
    return GatewayError(401, message, code=code)


def model_not_found(model: object) -> GatewayError:
    shown = model if isinstance(model, str) and len(model) <= 100 and model.isprintable() else "(invalid)"
    return GatewayError(
        404,
        f"The model '{shown}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def unavailable(message: str, retry_after: int, code: str = "model_not_ready") -> GatewayError:
    return GatewayError(
        503,
        message,
        type="service_unavailable",
        code=code,
        headers=[(b"retry-after", str(retry_after).encode())],
    )
