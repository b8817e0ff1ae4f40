"""Serializers of targets, deployments, replicas and events.

Types and ranges are checked here (so the OpenAPI schema shows them); the cross-field rules
and the clear domain messages live in ``controlplane.deployments.validation`` and services.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.catalog.choices import DType, Quantization
from controlplane.core.api import InputSerializer, TenantChoiceMixin, TenantSlugField
from controlplane.deployments.choices import TargetKind
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from controlplane.deployments.validation import NUMERIC_LIMITS

# ----------------------------------------------------------------------------- targets

TARGET_OUTPUT_FIELDS = (
    "id",
    "tenant",
    "name",
    "kind",
    "docker_url",
    "kubeconfig_path",
    "kube_context",
    "kube_namespace",
    "model_volume",
    "node_selector",
    "tolerations",
    "labels",
    "gpu_inventory",
    "health",
    "health_checked_at",
    "created_at",
    "updated_at",
)


class TargetSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()

    class Meta:
        model = Target
        fields = TARGET_OUTPUT_FIELDS
        read_only_fields = TARGET_OUTPUT_FIELDS


def _label_map() -> serializers.DictField:
    return serializers.DictField(child=serializers.CharField(max_length=63, allow_blank=True), required=False)


class TargetEditableInput(InputSerializer):
    name = serializers.CharField(max_length=100, required=False)
    docker_url = serializers.CharField(max_length=500, allow_blank=True, required=False)
    kubeconfig_path = serializers.CharField(
        max_length=500, allow_blank=True, required=False, help_text="Path of a kubeconfig file on the workers."
    )
    kube_context = serializers.CharField(max_length=200, allow_blank=True, required=False)
    kube_namespace = serializers.CharField(max_length=63, allow_blank=True, required=False)
    model_volume = serializers.DictField(
        required=False, help_text='{"type": "hostPath", "path": ...} or {"type": "pvc", "claimName": ...}'
    )
    node_selector = _label_map()
    tolerations = serializers.ListField(child=serializers.DictField(), max_length=32, required=False)
    labels = _label_map()
    gpu_inventory = serializers.ListField(child=serializers.DictField(), max_length=64, required=False)


class TargetCreateInput(TenantChoiceMixin, TargetEditableInput):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=TargetKind.choices, required=False)


class TargetUpdateInput(TargetEditableInput):
    read_only_names = frozenset({"id", "tenant", "kind", "health", "health_checked_at", "created_at", "updated_at"})


# ----------------------------------------------------------------------------- deployments

SPEC_OUTPUT_FIELDS = (
    "served_model_name",
    "replicas",
    "min_replicas",
    "max_replicas",
    "gpus",
    "gpu_ids",
    "cpus",
    "memory_mb",
    "dtype",
    "quantization",
    "max_batch_size",
    "max_model_len",
    "max_tokens_cap",
    "tensor_parallel",
    "node_selector",
    "tolerations",
    "host_port",
    "autoscale",
    "target_concurrency",
    "scale_to_zero_idle_seconds",
)
DEPLOYMENT_OUTPUT_FIELDS = (
    "id",
    "tenant",
    "name",
    "model",
    "model_name",
    "target",
    "target_name",
    *SPEC_OUTPUT_FIELDS,
    "desired_state",
    "phase",
    "phase_message",
    "conditions",
    "ready_replicas",
    "progress",
    "generation",
    "observed_generation",
    "last_request_at",
    "reconciled_at",
    "created_at",
    "updated_at",
)


class DeploymentSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    model_name = serializers.SerializerMethodField()
    target_name = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = DEPLOYMENT_OUTPUT_FIELDS
        read_only_fields = DEPLOYMENT_OUTPUT_FIELDS

    # Lists annotate the names (see DeploymentViewSet.select_list); single objects join.
    def get_model_name(self, obj: Deployment) -> str:
        return str(getattr(obj, "model_name", None) or obj.model.name)

    def get_target_name(self, obj: Deployment) -> str:
        return str(getattr(obj, "target_name", None) or obj.target.name)


def _bounded(name: str, **kwargs: Any) -> serializers.Field:
    kind, low, high = NUMERIC_LIMITS[name]
    if kind is int:
        return serializers.IntegerField(min_value=int(low), max_value=int(high), required=False, **kwargs)
    return serializers.FloatField(min_value=low, max_value=high, required=False, **kwargs)


class DeploymentSpecInput(InputSerializer):
    """Spec fields, all optional: create uses defaults, PATCH changes only what is sent."""

    served_model_name = serializers.CharField(
        max_length=100, required=False, help_text="Name clients send as 'model' to the gateway."
    )
    replicas = _bounded("replicas")
    min_replicas = _bounded("min_replicas")
    max_replicas = _bounded("max_replicas")
    gpus = _bounded("gpus", help_text="GPUs per replica.")
    gpu_ids = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=16, required=False, help_text="Pin to these devices."
    )
    cpus = _bounded("cpus")
    memory_mb = _bounded("memory_mb")
    dtype = serializers.ChoiceField(choices=DType.choices, required=False)
    quantization = serializers.ChoiceField(choices=Quantization.choices, required=False)
    max_batch_size = _bounded("max_batch_size")
    max_model_len = _bounded("max_model_len")
    max_tokens_cap = _bounded("max_tokens_cap")
    tensor_parallel = _bounded("tensor_parallel")
    node_selector = serializers.DictField(child=serializers.CharField(max_length=63, allow_blank=True), required=False)
    tolerations = serializers.ListField(child=serializers.DictField(), max_length=32, required=False)
    host_port = _bounded("host_port", allow_null=True)
    autoscale = serializers.BooleanField(required=False)
    target_concurrency = _bounded("target_concurrency")
    scale_to_zero_idle_seconds = _bounded("scale_to_zero_idle_seconds")


class DeploymentCreateInput(TenantChoiceMixin, DeploymentSpecInput):
    name = serializers.CharField(max_length=63, help_text="DNS label: lowercase letters, digits and '-'.")
    model = serializers.IntegerField(min_value=1, help_text="Id of a catalog model of the same tenant.")
    target = serializers.IntegerField(min_value=1, help_text="Id of a target of the same tenant.")


class DeploymentUpdateInput(DeploymentSpecInput):
    read_only_names = frozenset(set(DEPLOYMENT_OUTPUT_FIELDS) - set(SPEC_OUTPUT_FIELDS) - {"model"})
    model = serializers.IntegerField(
        min_value=1, required=False, help_text="Switch to another model of the same tenant (rolling update)."
    )


class ScaleInput(InputSerializer):
    replicas = serializers.IntegerField(min_value=0, max_value=int(NUMERIC_LIMITS["replicas"][2]))


# ----------------------------------------------------------------------------- replicas, events

REPLICA_FIELDS = (
    "id",
    "tenant",
    "deployment",
    "deployment_name",
    "name",
    "backend_id",
    "generation",
    "endpoint",
    "state",
    "started_at",
    "ready_at",
    "last_heartbeat_at",
    "consecutive_failures",
    "last_error",
    "created_at",
    "updated_at",
)


class ReplicaSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()
    deployment_name = serializers.CharField(source="deployment.name", read_only=True)

    class Meta:
        model = Replica
        fields = REPLICA_FIELDS
        read_only_fields = REPLICA_FIELDS


class ReplicaLogsSerializer(serializers.Serializer):
    replica = serializers.IntegerField()
    tail = serializers.IntegerField()
    logs = serializers.CharField()


EVENT_FIELDS = ("id", "tenant", "deployment", "type", "reason", "message", "actor", "created_at")


class EventSerializer(serializers.ModelSerializer):
    tenant = TenantSlugField()

    class Meta:
        model = DeploymentEvent
        fields = EVENT_FIELDS
        read_only_fields = EVENT_FIELDS
