"""What a personal access token may do: its scopes, checked before any view runs.

Every API operation needs one scope: reading (safe methods) needs ``read``, anything else
``write``, and the operations a view names in ``token_admin_actions`` (memberships, API key
creation, tenant settings, the whole platform API) need ``admin``. Sessions are not limited by
scopes, only by roles; a token is limited by both.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from controlplane.core.exceptions import InsufficientScope
from controlplane.tenancy.choices import TokenScope
from controlplane.tenancy.models import AccessToken


def required_token_scope(view: Any, request: Request) -> str:
    """The scope ``view`` needs for ``request`` (a view may decide with ``required_token_scope``)."""
    decide = getattr(view, "required_token_scope", None)
    if decide is not None:
        return str(decide(request))
    return TokenScope.READ if request.method in SAFE_METHODS else TokenScope.WRITE


class TokenScopePermission(BasePermission):
    """Refuse (403, ``insufficient_scope``) a token request its scopes do not cover."""

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if not isinstance(token, AccessToken):
            return True
        needed = required_token_scope(view, request)
        if not token.allows(needed):
            raise InsufficientScope(
                f"This access token lacks the {needed!r} scope this operation needs (it has {token.scopes}).",
                needed=needed,
            )
        return True
