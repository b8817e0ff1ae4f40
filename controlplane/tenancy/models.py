"""Tenants, memberships and personal access tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.core.models import TimeStamped
from controlplane.tenancy.choices import Role, token_scope_allows

# Quota resource -> the Tenant field holding its limit (null = unlimited, 0 = none); the keys are
# those of settings.HANGAR_QUOTA_DEFAULTS, in the order shown to people.
QUOTA_FIELDS: dict[str, str] = {
    "gpus": "quota_gpus",
    "gpu_memory_mb": "quota_gpu_memory_mb",
    "cpus": "quota_cpus",
    "memory_mb": "quota_memory_mb",
    "replicas": "quota_replicas",
    "deployments": "quota_deployments",
}


class Tenant(TimeStamped):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)
    # A deactivated tenant keeps its rows, but its members, keys and replicas stop working.
    is_active = models.BooleanField(default=True)
    # Tenant-wide gateway limits (0 = unlimited); each key may set tighter ones.
    rpm_limit = models.PositiveIntegerField(default=0)
    tpm_limit = models.PositiveIntegerField(default=0)
    monthly_token_budget = models.PositiveBigIntegerField(default=0)
    # Explicit burst allowance of the tenant-wide limits, % of the limit (0 = none).
    burst_percent = models.PositiveSmallIntegerField(default=0)
    # Quotas, set by platform admins (null = unlimited, 0 = none), per replica summed over every
    # deployment that is not deleted; autoscaled deployments count at max_replicas.
    quota_gpus = models.PositiveIntegerField(null=True, blank=True)
    quota_gpu_memory_mb = models.PositiveBigIntegerField(null=True, blank=True)
    quota_cpus = models.FloatField(null=True, blank=True)
    quota_memory_mb = models.PositiveBigIntegerField(null=True, blank=True)
    quota_replicas = models.PositiveIntegerField(null=True, blank=True)
    quota_deployments = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]
        permissions = [("administer_platform", "Administer the platform: targets, grants, quotas, tenants, users")]

    def __str__(self) -> str:
        return self.slug


class Membership(TimeStamped):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        ordering = ["tenant_id", "user_id"]
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")]

    def __str__(self) -> str:
        return f"{self.user_id}@{self.tenant_id}:{self.role}"


class AccessToken(TimeStamped):
    """A personal access token for automation; only a peppered digest is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_tokens")
    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    display_prefix = models.CharField(max_length=40)
    # TokenScope values; each includes the lower ones (``choices.token_scope_allows``).
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.display_prefix

    def allows(self, scope: str) -> bool:
        return token_scope_allows(self.scopes, scope)
