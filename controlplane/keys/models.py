"""Per-tenant gateway API keys. Only a peppered HMAC digest of the secret is stored."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.core.models import TenantOwned


class ApiKey(TenantOwned):
    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    display_prefix = models.CharField(max_length=40)
    scopes = models.JSONField(default=list)
    # Served model names this key may use; empty means every model of the tenant.
    allowed_models = models.JSONField(default=list, blank=True)
    rpm_limit = models.PositiveIntegerField(default=0)  # 0 = only the tenant's limit applies
    tpm_limit = models.PositiveIntegerField(default=0)
    monthly_token_budget = models.PositiveBigIntegerField(default=0)
    # Explicit burst allowance: in any 60 s window at most limit + limit * burst_percent / 100.
    burst_percent = models.PositiveSmallIntegerField(default=0)
    # Issued before keyed checksums (its token ends in a CRC32 checksum): the gateway still
    # accepts it (controlplane.core.secrets); re-issue the key to drop the flag.
    legacy_checksum = models.BooleanField(default=False, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The personal access token that created the key, if one did: revoking that token can
    # revoke the keys it made (``access_token_revoke(revoke_keys=True)``).
    created_by_token = models.ForeignKey(
        "tenancy.AccessToken", on_delete=models.SET_NULL, null=True, blank=True, related_name="api_keys"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.display_prefix})"
