"""Catalog entries: the models a tenant can deploy."""

from __future__ import annotations

from django.db import models

from controlplane.catalog.choices import ModelFormat
from controlplane.core.models import TenantOwned


class Model(TenantOwned):
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True, default="")
    # Local directory (on the worker / Docker host / node) or a registry reference.
    source = models.CharField(max_length=1000)
    format = models.CharField(max_length=16, choices=ModelFormat.choices, default=ModelFormat.SAFETENSORS)
    architecture = models.CharField(max_length=100, blank=True, default="")
    parameter_count = models.PositiveBigIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    dtype_options = models.JSONField(default=list, blank=True)
    tokenizer_info = models.JSONField(default=dict, blank=True)
    context_length = models.PositiveIntegerField(default=0)
    # Both need an explicit admin choice; off by default.
    allow_unsafe_weights = models.BooleanField(default=False)
    trust_remote_code = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="model_unique_name_per_tenant")]

    def __str__(self) -> str:
        return self.name
