"""Catalog entries: the models a tenant can deploy."""

from __future__ import annotations

from django.db import models

from controlplane.catalog.choices import ModelFormat, ModelTask, Pooling
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
    # Read from the directory at registration (a sentence-transformers pooling config means
    # ``embed``), or chosen by whoever registers it; the gateway routes and refuses by it.
    task = models.CharField(max_length=16, choices=ModelTask.choices, default=ModelTask.GENERATE)
    pooling = models.CharField(max_length=8, choices=Pooling.choices, default=Pooling.NONE, blank=True)
    # The builder's marker says so (``workers.runtime.tinymodel``): the dashboard labels such a
    # model, whose answers are gibberish by design.
    random_weights = models.BooleanField(default=False)
    # Both need an explicit admin choice; off by default.
    allow_unsafe_weights = models.BooleanField(default=False)
    trust_remote_code = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="model_unique_name_per_tenant")]

    def __str__(self) -> str:
        return self.name
