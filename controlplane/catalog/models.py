"""Catalog entries: the models a tenant can deploy."""

from __future__ import annotations

from django.db import models

from controlplane.catalog.choices import CredentialKind, ModelFormat, ModelTask, Pooling, UploadStatus
from controlplane.core.models import TenantOwned


class Model(TenantOwned):
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True, default="")
    # A directory's real path under a model root, ``s3://bucket/prefix`` or ``hf://org/name@<commit>``
    # (a hub revision is pinned to its commit hash at registration).
    source = models.CharField(max_length=1000)
    credential = models.ForeignKey(
        "catalog.SourceCredential", null=True, blank=True, on_delete=models.PROTECT, related_name="models"
    )
    # Every file with its size and sha256 ([{"name", "size", "sha256"}]); nodes verify their cache
    # against it. ``content_hash`` (sha256 of the manifest) names the model in every node's cache.
    manifest = models.JSONField(default=list, blank=True)
    content_hash = models.CharField(max_length=64, blank=True, default="", db_index=True)
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


class SourceCredential(TenantOwned):
    """A tenant's way into an S3 bucket or a hub: endpoint and region in clear, the secret encrypted.

    ``secret`` is ``controlplane.core.crypto`` ciphertext of a JSON object (``access_key_id``,
    ``secret_access_key``, ``session_token`` for S3; ``token`` for the hub). Write-only in the
    API, never logged, never in audit changes.
    """

    name = models.SlugField(max_length=50)
    kind = models.CharField(max_length=8, choices=CredentialKind.choices)
    endpoint_url = models.CharField(max_length=500, blank=True, default="")
    region = models.CharField(max_length=50, blank=True, default="")
    secret = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="source_credential_unique_name_per_tenant")
        ]

    def __str__(self) -> str:
        return self.name


class Upload(TenantOwned):
    """A model sent through the API in chunks, into the platform's store (``HANGAR_MODEL_STORE_DIR``).

    ``files`` is what the client declared up front (``[{"name", "size", "sha256"}]``): every
    chunk is checked against it, and ``complete`` verifies each file's sha256 before the files
    move to ``<store>/<tenant-slug>/<pk>/`` and are registered as the model ``name``. What was
    received so far is the size of each partial file on disk, so a client resumes from there.
    """

    name = models.CharField(max_length=100)  # the catalog model it becomes
    description = models.CharField(max_length=500, blank=True, default="")
    files = models.JSONField(default=list)
    total_bytes = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=UploadStatus.choices, default=UploadStatus.OPEN)
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.SET_NULL, related_name="uploads")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"upload {self.pk} ({self.name})"
