"""Serializers of catalog models. Metadata read from the model directory is read-only."""

from __future__ import annotations

from rest_framework import serializers

from controlplane.catalog.choices import CredentialKind, DType, ModelTask, Pooling
from controlplane.catalog.models import Model, SourceCredential
from controlplane.catalog.naming import SERVED_NAME
from controlplane.catalog.selectors import model_memory_estimate
from controlplane.core.api import InputSerializer, TenantChoiceMixin, TenantSlugField

MODEL_FIELDS: tuple[str, ...] = (
    "id",
    "tenant",
    "name",
    "description",
    "source",
    "format",
    "architecture",
    "parameter_count",
    "size_bytes",
    "context_length",
    "task",
    "pooling",
    "random_weights",
    "dtype_options",
    "tokenizer_info",
    "content_hash",
    "allow_unsafe_weights",
    "trust_remote_code",
    "created_at",
    "updated_at",
)


class ModelSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()

    class Meta:
        model = Model
        fields = MODEL_FIELDS
        read_only_fields = MODEL_FIELDS


class MemoryEstimateSerializer(serializers.Serializer):
    float32 = serializers.IntegerField()
    float16 = serializers.IntegerField()
    bfloat16 = serializers.IntegerField()
    int8 = serializers.IntegerField()


class ManifestFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()


class ModelDetailSerializer(ModelSerializer):
    memory_estimate = serializers.SerializerMethodField(
        help_text="Estimated bytes of memory one replica needs, per dtype (and with int8 quantization)."
    )
    manifest = ManifestFileSerializer(many=True, read_only=True, help_text="Every file with its size and sha256.")
    credential: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True
    )

    class Meta(ModelSerializer.Meta):
        fields: tuple[str, ...] = (*MODEL_FIELDS, "credential", "manifest", "memory_estimate")
        read_only_fields: tuple[str, ...] = fields

    def get_memory_estimate(self, obj: Model) -> MemoryEstimateSerializer:
        return model_memory_estimate(model=obj)  # type: ignore[return-value]


class ModelEditableInput(InputSerializer):
    description = serializers.CharField(max_length=500, allow_blank=True, required=False)
    dtype_options = serializers.ListField(
        child=serializers.ChoiceField(choices=DType.choices),
        max_length=len(DType.values),
        required=False,
        help_text="dtypes deployments of this model may use; all of them if omitted.",
    )
    allow_unsafe_weights = serializers.BooleanField(
        required=False, help_text="Accept pickle weights (.bin/.pt), which can run code. Platform admins only."
    )
    trust_remote_code = serializers.BooleanField(
        required=False, help_text="Let the runtime execute code shipped with the model. Platform admins only."
    )


class ModelCreateInput(TenantChoiceMixin, ModelEditableInput):
    name = serializers.RegexField(
        SERVED_NAME,
        max_length=100,
        error_messages={"invalid": "Use 1-100 letters, digits and . _ : / -, starting with a letter or digit."},
    )
    task = serializers.ChoiceField(
        choices=ModelTask.choices,
        required=False,
        help_text="generate or embed; default: read from the directory (a sentence-transformers pooling config means embed).",
    )
    pooling = serializers.ChoiceField(
        choices=[c for c in Pooling.choices if c[0]],
        required=False,
        help_text="Embedding models: mean, last or cls; default: the directory's pooling config, else mean.",
    )
    source = serializers.CharField(  # type: ignore[assignment]  # a field, not Field.source
        max_length=1000,
        help_text="file:///<dir> or an absolute directory path under <root>/<tenant-slug>/ or <root>/_shared/ of a "
        "model root; s3://<bucket>/<prefix>; or hf://<org>/<name>[@<revision>] (pinned to its commit hash).",
    )
    credential = serializers.SlugField(
        max_length=50,
        required=False,
        allow_blank=True,
        help_text="Name of the tenant's source credential for s3:// or hf:// (anonymous without one).",
    )


class ModelUpdateInput(ModelEditableInput):
    read_only_names = frozenset(
        set(MODEL_FIELDS) - set(ModelEditableInput().fields) | {"memory_estimate", "manifest", "credential"}
    )


class SourceCredentialSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = SourceCredential
        fields = ("id", "tenant", "name", "kind", "endpoint_url", "region", "has_secret", "created_at")
        read_only_fields = fields

    def get_has_secret(self, obj: SourceCredential) -> bool:
        return bool(obj.secret)


class SourceCredentialCreateInput(TenantChoiceMixin, InputSerializer):
    name = serializers.SlugField(max_length=50)
    kind = serializers.ChoiceField(choices=CredentialKind.choices)
    endpoint_url = serializers.URLField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="S3 or hub endpoint; one the platform allows (HANGAR_MODEL_SOURCE_ENDPOINTS). Empty: AWS / the public hub.",
    )
    region = serializers.RegexField(r"^[a-z0-9-]{0,50}$", required=False, allow_blank=True)
    secret = serializers.DictField(
        child=serializers.CharField(max_length=4096, allow_blank=True),
        write_only=True,
        help_text="s3: access_key_id, secret_access_key, session_token; hf: token. Stored encrypted, never shown again.",
    )
