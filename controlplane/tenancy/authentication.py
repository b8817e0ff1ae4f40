"""DRF authentication with personal access tokens (``Authorization: Bearer hgp_...``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from controlplane.core import secrets
from controlplane.core.context import client_ip
from controlplane.tenancy.models import AccessToken
from controlplane.tenancy.services import TOKEN_PREFIX, access_token_touch

# last_used_at is written at most this often per token, not on every request.
LAST_USED_GRANULARITY = timedelta(minutes=5)


class AccessTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, AccessToken] | None:
        header = authentication.get_authorization_header(request)
        if not header:
            return None
        try:
            text = header.decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.") from None
        scheme, _, value = text.partition(" ")
        if scheme.lower() != "bearer":
            return None
        parsed = secrets.parse(value.strip(), TOKEN_PREFIX)
        if parsed is None:
            raise exceptions.AuthenticationFailed("Invalid access token.")
        token = AccessToken.objects.select_related("user").filter(key_id=parsed.key_id).first()
        if token is None or not secrets.digest_matches(parsed.secret, token.digest):
            raise exceptions.AuthenticationFailed("Invalid access token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This access token was revoked.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("This access token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive.")
        source_ip = client_ip(request.META)
        stale = token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY
        if stale or token.last_used_ip != source_ip:
            access_token_touch(token=token, at=now, source_ip=source_ip)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
