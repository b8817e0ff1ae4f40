"""Usage metering, rolled up per key, model and minute (never a row per request)."""

from __future__ import annotations

from django.db import models


class UsageRecord(models.Model):
    tenant = models.ForeignKey("tenancy.Tenant", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("keys.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    model = models.CharField(max_length=100)
    minute = models.DateTimeField(db_index=True)
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)

    class Meta:
        ordering = ["-minute"]
        constraints = [
            models.UniqueConstraint(fields=["api_key", "model", "minute"], name="usage_unique_key_model_minute")
        ]
        indexes = [models.Index(fields=["tenant", "-minute"])]
