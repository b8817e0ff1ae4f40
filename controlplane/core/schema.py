"""The OpenAPI document tells the truth: every error an operation can answer, strict request bodies.

``ApiSchema`` is the schema class of every API viewset (``ScopedViewSet.schema``). On top of
drf-spectacular's inference it documents, for each operation, the error statuses the shared
plumbing can produce with their JSON bodies (``Error``, ``ValidationError``), and marks request
bodies of ``InputSerializer`` as closed (``additionalProperties: false``): unknown fields are a
400 (see ``controlplane.core.api.InputSerializer``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from controlplane.core.api import NO_NUL, InputSerializer


class ErrorSerializer(serializers.Serializer):
    """Every error answer under ``/api/``: a message and a machine-readable code."""

    detail = serializers.CharField(help_text="What went wrong, for people.")
    code = serializers.CharField(required=False, help_text="What went wrong, for programs (e.g. `not_found`).")
    request_id = serializers.CharField(
        required=False, help_text="Only on 500s: the request id that the server's log lines carry."
    )

    class Meta:
        ref_name = "Error"


class ValidationErrorSerializer(ErrorSerializer):
    """A 400: ``errors`` maps each offending field (body field or query parameter) to its messages.

    For compatibility the same field keys also appear at the top level.
    """

    class Meta:
        ref_name = "ValidationError"

    def get_fields(self) -> dict[str, serializers.Field]:
        # Added here, not declared: an ``errors`` attribute would hide ``Serializer.errors``.
        fields: dict[str, serializers.Field] = super().get_fields()
        fields["errors"] = serializers.DictField(
            child=serializers.JSONField(),
            required=False,
            help_text="Field name (or `non_field_errors`) -> list of messages.",
        )
        return fields


def _error(description: str, serializer: type[serializers.Serializer] = ErrorSerializer) -> OpenApiResponse:
    return OpenApiResponse(response=serializer, description=description)


# status -> (description, body); which of them an operation gets is decided in ``error_statuses``.
ERRORS: dict[int, tuple[str, type[serializers.Serializer]]] = {
    400: ("Invalid input: a malformed body, a bad field, filter or paging value.", ValidationErrorSerializer),
    401: ("No valid credentials (`Authorization: Bearer hgp_...` or a session).", ErrorSerializer),
    403: (
        "Authenticated, but none of your roles allows this, or the access token lacks the scope "
        "(`x-token-scope`) the operation needs (`insufficient_scope`).",
        ErrorSerializer,
    ),
    404: ("No such object visible to you (or not a platform admin, for `/platform/`).", ErrorSerializer),
    409: ("Conflicts with the current state (a name taken, a change made at the same time).", ErrorSerializer),
    413: ("The request body is larger than `HANGAR_MAX_BODY_BYTES`.", ErrorSerializer),
    415: ("The request body is not `application/json`.", ErrorSerializer),
    429: (
        "Too many requests from this user or token (`HANGAR_API_RATE_USER`, `HANGAR_API_RATE_TOKEN`); "
        "retry after `Retry-After` seconds (also `retry_after` in the body).",
        ErrorSerializer,
    ),
    500: ("An unexpected failure; the body repeats the request id of the server's log lines.", ErrorSerializer),
    503: ("The database is unreachable; retry after `Retry-After` seconds.", ErrorSerializer),
}


def error_statuses(*, method: str, has_path_params: bool, has_query_params: bool, has_body: bool) -> list[int]:
    """The error statuses an operation can answer, from its shape."""
    codes = {401, 403, 429, 500, 503}
    if has_query_params or has_body:
        codes.add(400)
    if has_path_params:
        codes.add(404)
    if method in ("POST", "PATCH", "PUT", "DELETE"):
        codes.update((400, 409, 413))
    if has_body:
        codes.add(415)
    return sorted(codes)


class ApiSchema(AutoSchema):
    """drf-spectacular's schema, plus the error answers, closed request bodies, and the scope a
    personal access token needs for each operation (``x-token-scope``)."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        decide = getattr(self.view, "required_token_scope", None)  # every ScopedViewSet has it
        if operation is not None and decide is not None:
            operation["x-token-scope"] = str(decide(self.view.request))
        return operation

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            if str(status) in responses:
                continue
            description, serializer = ERRORS[status]
            responses[str(status)] = self._get_response_for_code(_error(description, serializer), str(status))  # type: ignore[no-untyped-call]
        return responses

    def _error_statuses(self) -> list[int]:
        has_query_params = self._is_list_view() or any(
            p.get("in") == "query" for p in self._get_parameters() if isinstance(p, dict)
        )
        platform = "/platform/" in self.path
        return error_statuses(
            method=self.method,
            has_path_params="{" in self.path or platform,
            has_query_params=has_query_params,
            has_body=self.method in ("POST", "PATCH", "PUT") and self.get_request_serializer() is not None,
        )

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)  # type: ignore[no-untyped-call]
        if direction == "request" and isinstance(field, serializers.CharField) and isinstance(schema, dict):
            plain = schema.get("type") == "string" and not {"pattern", "format", "enum"} & set(schema)
            if plain:
                schema["pattern"] = NO_NUL  # a field's own RegexValidator, if any, replaces it
        return schema

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)  # type: ignore[no-untyped-call]
        closed = isinstance(serializer, InputSerializer) or (
            isinstance(serializer, type) and issubclass(serializer, InputSerializer)
        )
        if direction == "request" and closed:
            schema["additionalProperties"] = False
        return schema
