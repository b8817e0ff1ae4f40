"""A fault switch for tests: make a fraction of requests fail (500) or slow down, on purpose.

``--fault-error-rate 0.3`` answers 30 % of ``POST /v1/*`` requests with an OpenAI-style 500
before they reach the model; ``--fault-delay-rate`` / ``--fault-delay-ms`` hold a fraction of
them first. Only the control plane sets these flags (``Deployment.faults``, which platform admins
alone can write, and only with ``HANGAR_FAULT_INJECTION`` on), so a canary of a bad revision can be
produced and rolled back in tests. ``/health`` and ``/metrics`` are never touched: a faulty
replica still looks ready, as a subtly broken release does.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

ERROR_BODY = json.dumps(
    {
        "error": {
            "message": "injected fault (--fault-error-rate)",
            "type": "server_error",
            "param": None,
            "code": "injected_fault",
        }
    }
).encode()


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    delay_rate: float = 0.0
    delay_ms: float = 0.0

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or (self.delay_rate > 0 and self.delay_ms > 0)


class FaultInjector:
    """ASGI middleware applying ``Faults`` to API requests."""

    def __init__(self, app: ASGIApp, faults: Faults, rng: random.Random | None = None) -> None:
        self.app = app
        self.faults = faults
        self.rng = rng or random.Random()

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not str(scope.get("path", "")).startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        faults = self.faults
        if faults.delay_ms > 0 and self.rng.random() < faults.delay_rate:
            await asyncio.sleep(faults.delay_ms / 1000)
        if self.rng.random() < faults.error_rate:
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(ERROR_BODY)).encode())]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": ERROR_BODY})
            return
        await self.app(scope, receive, send)


def rate(value: str) -> float:
    """argparse type: a fraction from 0 to 1."""
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number
