"""The request id: one value that follows a request through the logs of every process it reaches.

Taken from the client's ``X-Request-ID`` when it is sane (1-64 characters of
``[A-Za-z0-9._-]``: nothing that could forge a log field or grow without bound), otherwise
generated. It is bound into structlog's context (every log line of the request carries it),
answered in the response header, passed to Celery tasks in their message headers
(``controlplane.core.tasks``; ``console.celery`` binds it in the worker) and sent to the model
replica by the gateway.
"""

from __future__ import annotations

import re
import uuid

import structlog

HEADER = "X-Request-ID"
HEADER_LOWER = b"x-request-id"
TASK_HEADER = "hangar_request_id"  # the Celery message header that carries it
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def accept(value: str | bytes | None) -> str:
    """The client's id if it is sane, else a new one."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            value = None
    if value and _SANE.fullmatch(value):
        return value
    return uuid.uuid4().hex


def from_asgi(headers: list[tuple[bytes, bytes]]) -> str:
    """``accept`` applied to an ASGI scope's ``X-Request-ID`` header."""
    for name, value in headers:
        if name == HEADER_LOWER:
            return accept(value)
    return accept(None)


def is_sane(value: object) -> bool:
    return isinstance(value, str) and _SANE.fullmatch(value) is not None


def bind(request_id: str) -> None:
    """Bind ``request_id`` (alone) into this context's log fields."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)


def current() -> str | None:
    """The request id bound in this context, if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None
