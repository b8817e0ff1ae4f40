"""OpenAPI description of personal access token authentication (``Authorization: Bearer hgp_...``)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class AccessTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.tenancy.authentication.AccessTokenAuthentication"
    name = "accessToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "hgp_<key id>_<secret><checksum>",
            "description": "A personal access token from POST /api/v1/tokens/.",
        }
