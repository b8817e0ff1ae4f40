"""The replica's bearer credential: every path but ``/health`` requires ``Authorization: Bearer``.

The control plane mints one token per deployment and gives it to the replica either in the
environment (``HANGAR_RUNTIME_TOKEN``: Docker, and Kubernetes from a Secret) or in a file
(``--token-file``, mode 0600: local replicas, so the token is not in ``/proc/<pid>/environ``
and not inherited by anything the model's code starts). The gateway and the metrics scraper
present it. ``/health`` stays open for the reconciler, the image's HEALTHCHECK and kubelet
probes; it tells nothing but the phase.

A runtime started without a token (a developer running it by hand) serves everyone and says so
on stderr; the drivers always configure one.
"""

from __future__ import annotations

import hmac
import json
import os
import stat
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

TOKEN_ENV = "HANGAR_RUNTIME_TOKEN"
OPEN_PATHS = frozenset({"/health"})
DRAIN_LIMIT = 1024 * 1024  # the largest body the API accepts anyway

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenError(Exception):
    """The configured token cannot be used (unreadable file, loose permissions, empty)."""


def load_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The expected token: from ``token_file`` when given, else ``$HANGAR_RUNTIME_TOKEN``; None if neither."""
    if token_file is None:
        return environ.get(TOKEN_ENV) or None
    try:
        with token_file.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read(4096)
    except OSError as exc:
        raise TokenError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise TokenError(f"the token file {token_file} is not a regular file")
    if mode & 0o077:
        raise TokenError(
            f"the token file {token_file} is accessible to group or others (mode {stat.S_IMODE(mode):04o}); "
            "chmod 600 it"
        )
    token = raw.decode("utf-8", "replace").strip()
    if not token:
        raise TokenError(f"the token file {token_file} is empty")
    return token


def _unauthorized(message: str, code: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json.dumps({"error": error}).encode()


MISSING = _unauthorized(
    "This replica requires the deployment's credential: send 'Authorization: Bearer <token>'.",
    "missing_credential",
)
INVALID = _unauthorized("The credential sent to this replica is not valid.", "invalid_credential")


class BearerAuth:
    """ASGI middleware: 401 in OpenAI's error shape unless the request carries ``token``."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.expected = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.expected is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope["headers"])
        if presented is not None and hmac.compare_digest(presented, self.expected):
            await self.app(scope, receive, send)
            return
        # Read the refused request's body first: a server that closes a connection with unread
        # data resets it, and the client may lose the 401 along with it.
        await _drain(receive)
        await _reject(send, MISSING if presented is None else INVALID)


def _bearer(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, credential = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None
            return credential.strip()
    return None


async def _drain(receive: Receive) -> None:
    size = 0
    while size <= DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _reject(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="hangar-replica"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
