"""Target health as a status and a short fixed reason, never the remote side's own words.

A target's address is platform input, but whatever answers there is not. Echoing a response body
or an exception's text (which quotes bodies, certificate subjects, HTML pages) into a target's
health or a deployment's events would turn "check this target" into a way to read any service the
worker can reach. So failures are classified by the *type* of the exception into one of the
reasons below, and only that fixed string is stored or shown. Numbers and versions reported by a
backend are coerced (``number``, ``version_text``) before they are stored.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any


class Status:
    OK = "ok"
    UNREACHABLE = "unreachable"  # nothing usable answered: refused, timed out, no such host/socket
    REFUSED = "refused"  # something answered and refused us: TLS, SSH host key or authentication
    MISCONFIGURED = "misconfigured"  # the target's settings are refused here, or point at no backend


class Reason:
    CONNECTION_REFUSED = "connection refused"
    TIMEOUT = "timeout"
    HOST_NOT_FOUND = "host not found"
    SOCKET_NOT_FOUND = "socket not found"
    CONNECTION_FAILED = "connection failed"
    SERVER_ERROR = "server error"
    TLS_FAILED = "TLS handshake failed"
    HOST_KEY_UNTRUSTED = "SSH host key not trusted"
    AUTH_FAILED = "authentication failed"
    ACCESS_DENIED = "access denied"
    NOT_DOCKER = "not a Docker daemon"
    NOT_KUBERNETES = "not a Kubernetes API server"
    SCHEME_REFUSED = "URL scheme not allowed"
    SOCKET_REFUSED = "socket not in the allowlist"
    PLAIN_TCP_REFUSED = "plain TCP not allowed"
    USERINFO_REFUSED = "credentials in the URL not allowed"
    BAD_URL = "invalid URL"
    TLS_MATERIAL_REQUIRED = "TLS client certificate required"
    SSH_KEY_REQUIRED = "SSH key required"
    BAD_CREDENTIALS = "invalid credentials"
    CREDENTIALS_UNREADABLE = "credentials unreadable"
    KUBE_AUTH_REQUIRED = "Kubernetes authentication not set"
    KUBECONFIG_REQUIRED = "kubeconfig required"
    KUBECONFIG_INVALID = "invalid kubeconfig"
    KUBECONFIG_REFUSED = "kubeconfig refers to worker files or commands"
    NOT_IN_CLUSTER = "not running in a cluster"
    BAD_PUBLISH_HOST = "invalid publish host"
    UNEXPECTED = "unexpected error"


STATUS_OF: dict[str, str] = {
    Reason.CONNECTION_REFUSED: Status.UNREACHABLE,
    Reason.TIMEOUT: Status.UNREACHABLE,
    Reason.HOST_NOT_FOUND: Status.UNREACHABLE,
    Reason.SOCKET_NOT_FOUND: Status.UNREACHABLE,
    Reason.CONNECTION_FAILED: Status.UNREACHABLE,
    Reason.SERVER_ERROR: Status.UNREACHABLE,
    Reason.UNEXPECTED: Status.UNREACHABLE,
    Reason.TLS_FAILED: Status.REFUSED,
    Reason.HOST_KEY_UNTRUSTED: Status.REFUSED,
    Reason.AUTH_FAILED: Status.REFUSED,
    Reason.ACCESS_DENIED: Status.REFUSED,
    Reason.NOT_DOCKER: Status.MISCONFIGURED,
    Reason.NOT_KUBERNETES: Status.MISCONFIGURED,
    Reason.SCHEME_REFUSED: Status.MISCONFIGURED,
    Reason.SOCKET_REFUSED: Status.MISCONFIGURED,
    Reason.PLAIN_TCP_REFUSED: Status.MISCONFIGURED,
    Reason.USERINFO_REFUSED: Status.MISCONFIGURED,
    Reason.BAD_URL: Status.MISCONFIGURED,
    Reason.TLS_MATERIAL_REQUIRED: Status.MISCONFIGURED,
    Reason.SSH_KEY_REQUIRED: Status.MISCONFIGURED,
    Reason.BAD_CREDENTIALS: Status.MISCONFIGURED,
    Reason.CREDENTIALS_UNREADABLE: Status.MISCONFIGURED,
    Reason.KUBE_AUTH_REQUIRED: Status.MISCONFIGURED,
    Reason.KUBECONFIG_REQUIRED: Status.MISCONFIGURED,
    Reason.KUBECONFIG_INVALID: Status.MISCONFIGURED,
    Reason.KUBECONFIG_REFUSED: Status.MISCONFIGURED,
    Reason.NOT_IN_CLUSTER: Status.MISCONFIGURED,
    Reason.BAD_PUBLISH_HOST: Status.MISCONFIGURED,
}


def report(reason: str = "", **facts: Any) -> dict[str, Any]:
    """A target's health: ``ok`` without a reason, else the reason's status.

    ``error`` repeats the reason (or, when reachable, a hint written here, e.g. a missing image)
    for readers of the older shape.
    """
    status = STATUS_OF.get(reason, Status.UNREACHABLE) if reason else Status.OK
    health: dict[str, Any] = {"reachable": status == Status.OK, "status": status, "reason": reason}
    health |= {"version": "", "gpus": 0, "error": reason}
    health |= facts
    return health


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (``__cause__``, ``__context__``, urllib3's ``reason``,
    exceptions passed as arguments), breadth first, each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def classify_network(exc: BaseException) -> str | None:
    """The reason for a transport failure, or ``None`` if nothing in the chain is one."""
    import requests.exceptions
    import urllib3.exceptions

    chain = list(causes(exc))

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(ssl.SSLError, requests.exceptions.SSLError, urllib3.exceptions.SSLError):
        return Reason.TLS_FAILED
    if has(ConnectionRefusedError):
        return Reason.CONNECTION_REFUSED
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return Reason.HOST_NOT_FOUND
    if has(TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
        return Reason.TIMEOUT
    if has(FileNotFoundError):
        return Reason.SOCKET_NOT_FOUND
    if has(PermissionError):
        return Reason.ACCESS_DENIED
    # requests' JSONDecodeError and HTTPError are OSErrors too, but an answer (unreadable, or with
    # an error status) is not a transport failure.
    answers = (ValueError, requests.exceptions.HTTPError)
    if any(isinstance(e, OSError | urllib3.exceptions.HTTPError) and not isinstance(e, answers) for e in chain):
        return Reason.CONNECTION_FAILED
    return None


_VERSION = re.compile(r"[0-9A-Za-z.+~_-]{1,64}")


def version_text(value: Any) -> str:
    """A backend's version string if it looks like one (else ``""``): never free text."""
    text = str(value or "")
    return text if _VERSION.fullmatch(text) else ""


def number(value: Any) -> int:
    """A non-negative count or size reported by a backend (else 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, min(int(value), 2**62))
