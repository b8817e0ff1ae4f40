"""Append-only audit trail: who did what to which object, from where."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditLog(models.Model):
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_repr = models.CharField(max_length=150)
    # The user whose account the row is about (a login, a failed login, a personal access token):
    # such rows belong to no tenant, and the user's tenants' auditors see them (``audit_list``).
    subject_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True, default="")
    object_repr = models.CharField(max_length=200, blank=True, default="")
    changes = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["subject_user", "-created_at"], name="audit_subject_created"),
        ]

    def __str__(self) -> str:
        return f"{self.actor_repr} {self.action} {self.object_type}:{self.object_id}"
