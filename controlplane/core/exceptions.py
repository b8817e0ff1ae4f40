"""Domain exceptions raised by services and selectors, turned into HTTP answers in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class; ``status`` is the HTTP status the API answers with."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, field_errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field_errors = field_errors or {}

    def extra(self) -> dict[str, Any]:
        """More top-level keys of the API answer's body (e.g. ``quota`` of a quota refusal)."""
        return {}


class ValidationFailed(DomainError):
    status = 400
    code = "invalid"


class NotFound(DomainError):
    """Also used for objects of another tenant, so their existence does not leak."""

    status = 404
    code = "not_found"


class PermissionDenied(DomainError):
    status = 403
    code = "permission_denied"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class InsufficientScope(PermissionDenied):
    """A personal access token without the scope an operation needs (whatever the user's role)."""

    code = "insufficient_scope"

    def __init__(self, message: str, *, needed: str) -> None:
        super().__init__(message)
        self.needed = needed

    def extra(self) -> dict[str, Any]:
        return {"needed_scope": self.needed}
