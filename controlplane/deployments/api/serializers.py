"""Serializers of targets, grants, deployments, replicas and events.

Types and ranges are checked here (so the OpenAPI schema shows them); the cross-field rules
and the clear domain messages live in ``controlplane.deployments.validation`` and services.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.core.api import InputSerializer, TenantChoiceMixin, TenantSlugField
from controlplane.deployments.choices import KubeAuth, KubeEndpoints, TargetKind
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target, TargetGrant
from controlplane.deployments.selectors import target_credential_names
from controlplane.deployments.spec import SPEC, SPEC_BY_NAME, Kind, SpecField
from controlplane.deployments.validation import (
    MAX_CERT_BYTES,
    MAX_KEY_BYTES,
    MAX_KUBECONFIG_BYTES,
    TARGET_SETTINGS,
    TLS_FIELDS,
    bounds_message,
)

# ----------------------------------------------------------------------------- targets

# What a tenant sees of a target granted to it: never its connection settings or raw errors.
TARGET_OUTPUT_FIELDS = ("id", "name", "kind", "health", "gpu_inventory", "labels")
HEALTH_REASON = re.compile(r"^[A-Za-z0-9 ,.:;'()_/-]{1,120}$")


class TargetHealthSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="unknown (never checked), ok, or a short status word from the check.")
    reason = serializers.CharField(allow_blank=True, help_text="A short fixed reason; never a backend's answer.")
    reachable = serializers.BooleanField(allow_null=True)
    gpus = serializers.IntegerField(help_text="GPUs the backend reports.")
    gpus_declared = serializers.IntegerField(help_text="GPUs listed in the target's gpu_inventory.")
    checked_at = serializers.DateTimeField(allow_null=True)


CHECKED_AT = serializers.DateTimeField()  # built once: a list page calls public_health per row


def public_health(target: Target) -> dict[str, Any]:
    """The tenant-facing part of ``Target.health``: status, a short fixed reason and capacity
    numbers; never ``error`` or anything else a backend said."""
    health = target.health if isinstance(target.health, dict) else {}
    reachable = health.get("reachable")
    status = health.get("status")
    if not (isinstance(status, str) and re.fullmatch(r"[a-z_]{1,32}", status)):
        status = "unknown" if not isinstance(reachable, bool) else ("ok" if reachable else "unreachable")
    reason = health.get("reason")
    gpus = health.get("gpus")
    return {
        "status": status,
        "reason": reason if isinstance(reason, str) and HEALTH_REASON.match(reason) else "",
        "reachable": reachable if isinstance(reachable, bool) else None,
        "gpus": gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0 else 0,
        "gpus_declared": len(target.gpu_inventory) if isinstance(target.gpu_inventory, list) else 0,
        "checked_at": CHECKED_AT.to_representation(target.health_checked_at) if target.health_checked_at else None,
    }


class TargetSerializer(serializers.ModelSerializer):
    """A target as tenants see it: name, kind, health and capacity."""

    health = serializers.SerializerMethodField()

    class Meta:
        model = Target
        fields = TARGET_OUTPUT_FIELDS
        read_only_fields = TARGET_OUTPUT_FIELDS

    @extend_schema_field(TargetHealthSerializer)
    def get_health(self, obj: Target) -> dict[str, Any]:
        return public_health(obj)


# Every setting a platform admin writes (the same list validation accepts), never the credentials.
PLATFORM_TARGET_OUTPUT_FIELDS = (
    "id",
    *TARGET_SETTINGS,
    "has_tls",
    "has_ssh_key",
    "has_kubeconfig",
    "health",
    "health_checked_at",
    "created_at",
    "updated_at",
)


class PlatformTargetSerializer(serializers.ModelSerializer):
    """A target as platform admins see it: every setting; credentials only as ``has_*`` flags."""

    has_tls = serializers.SerializerMethodField(help_text="TLS client material (tls_ca, tls_cert, tls_key) is stored.")
    has_ssh_key = serializers.SerializerMethodField(help_text="An SSH private key is stored.")
    has_kubeconfig = serializers.SerializerMethodField(help_text="A kubeconfig is stored.")

    class Meta:
        model = Target
        fields = PLATFORM_TARGET_OUTPUT_FIELDS
        read_only_fields = PLATFORM_TARGET_OUTPUT_FIELDS

    def _names(self, obj: Target) -> set[str]:
        cache = self.context.setdefault("credential_names", {})
        if obj.pk not in cache:
            cache[obj.pk] = target_credential_names(obj)
        return set(cache[obj.pk])

    def get_has_tls(self, obj: Target) -> bool:
        return bool(self._names(obj) & set(TLS_FIELDS))

    def get_has_ssh_key(self, obj: Target) -> bool:
        return "ssh_key" in self._names(obj)

    def get_has_kubeconfig(self, obj: Target) -> bool:
        return "kubeconfig" in self._names(obj)


def _label_map() -> serializers.DictField:
    return serializers.DictField(child=serializers.CharField(max_length=63, allow_blank=True), required=False)


def _credential(limit: int, what: str) -> serializers.CharField:
    return serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=False,
        max_length=limit,
        style={"base_template": "textarea.html"},
        help_text=f"Write-only: {what}. Never shown again; an empty string removes it.",
    )


class PlatformTargetEditableInput(InputSerializer):
    name = serializers.CharField(max_length=100, required=False)
    docker_url = serializers.CharField(
        max_length=500,
        allow_blank=True,
        required=False,
        help_text="unix:///path (listed in HANGAR_DOCKER_SOCKETS), tcp://host:port with TLS, or ssh://user@host[:port].",
    )
    publish_host = serializers.CharField(
        max_length=253, required=False, help_text="Address Docker replicas publish on and the gateway calls."
    )
    kube_auth = serializers.ChoiceField(choices=KubeAuth.choices, allow_blank=True, required=False)
    kube_context = serializers.CharField(max_length=200, allow_blank=True, required=False)
    kube_namespace = serializers.CharField(max_length=63, allow_blank=True, required=False)
    kube_endpoints = serializers.ChoiceField(
        choices=KubeEndpoints.choices,
        required=False,
        help_text="How the gateway reaches replicas: pod_ip (each pod) or service (the deployment's Service).",
    )
    model_volume = serializers.DictField(
        required=False, help_text='{"type": "hostPath", "path": "/abs/path"} or {"type": "pvc", "claimName": ...}'
    )
    node_selector = _label_map()
    tolerations = serializers.ListField(child=serializers.DictField(), max_length=32, required=False)
    labels = _label_map()
    gpu_inventory = serializers.ListField(child=serializers.DictField(), max_length=64, required=False)
    tls_ca = _credential(MAX_CERT_BYTES, "PEM CA certificate(s) of the Docker daemon")
    tls_cert = _credential(MAX_CERT_BYTES, "PEM client certificate")
    tls_key = _credential(MAX_KEY_BYTES, "PEM private key of the client certificate (unencrypted)")
    ssh_key = _credential(MAX_KEY_BYTES, "OpenSSH or PEM private key (unencrypted)")
    kubeconfig = _credential(MAX_KUBECONFIG_BYTES, "kubeconfig content (YAML, self-contained)")


class PlatformTargetCreateInput(PlatformTargetEditableInput):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=TargetKind.choices, required=False)


class PlatformTargetUpdateInput(PlatformTargetEditableInput):
    read_only_names = frozenset(
        {
            "id",
            "kind",
            "has_tls",
            "has_ssh_key",
            "has_kubeconfig",
            "health",
            "health_checked_at",
            "created_at",
            "updated_at",
        }
    )


GRANT_FIELDS = ("id", "target", "target_name", "tenant", "namespace", "created_at")


class GrantSerializer(serializers.ModelSerializer):
    target_name = serializers.CharField(source="target.name", read_only=True)
    tenant: serializers.SlugRelatedField = serializers.SlugRelatedField(
        slug_field="slug", read_only=True, help_text="Slug of the tenant."
    )

    class Meta:
        model = TargetGrant
        fields = GRANT_FIELDS
        read_only_fields = GRANT_FIELDS


class GrantCreateInput(InputSerializer):
    target = serializers.IntegerField(min_value=1, max_value=2**63 - 1, help_text="Target id.")
    tenant = serializers.SlugField(max_length=50, help_text="Slug of the tenant.")
    namespace = serializers.CharField(
        max_length=63,
        allow_blank=True,
        required=False,
        help_text="Kubernetes targets only: the namespace this tenant's replicas go to (default: the target's).",
    )


# ----------------------------------------------------------------------------- deployments

SPEC_OUTPUT_FIELDS = tuple(f.name for f in SPEC)
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


def _number_field(field: SpecField, options: dict[str, Any]) -> serializers.Field:
    message = bounds_message(field)
    options |= {"allow_null": field.nullable, "error_messages": {"min_value": message, "max_value": message}}
    if field.kind is Kind.INT:
        return serializers.IntegerField(min_value=int(field.low or 0), max_value=int(field.high or 0), **options)
    return serializers.FloatField(min_value=float(field.low or 0), max_value=float(field.high or 0), **options)


def spec_input_field(field: SpecField, *, required: bool = False) -> serializers.Field:
    """The API input field of a spec field (types and bounds; ``validation`` has the rest)."""
    options: dict[str, Any] = {"required": required, "help_text": field.help_text or field.label}
    if field.kind in (Kind.INT, Kind.FLOAT):
        return _number_field(field, options)
    if field.kind is Kind.BOOL:
        return serializers.BooleanField(**options)
    if field.kind is Kind.CHOICE and field.choices is not None:
        return serializers.ChoiceField(choices=field.choices.choices, **options)
    if field.kind is Kind.DEVICE_IDS:
        return serializers.ListField(child=serializers.CharField(max_length=64), max_length=field.max_length, **options)
    if field.kind is Kind.LABELS:
        return serializers.DictField(child=serializers.CharField(max_length=63, allow_blank=True), **options)
    if field.kind is Kind.TOLERATIONS:
        return serializers.ListField(child=serializers.DictField(), max_length=field.max_length, **options)
    return serializers.CharField(max_length=field.max_length or 100, **options)


def _with_spec_fields(cls: type[InputSerializer]) -> type[InputSerializer]:
    """Add an input field per declared spec field to ``cls`` (and so to its subclasses)."""
    cls._declared_fields.update({f.name: spec_input_field(f) for f in SPEC})
    return cls


@_with_spec_fields
class DeploymentSpecInput(InputSerializer):
    """Spec fields (``controlplane.deployments.spec``), all optional: create uses defaults,
    PATCH changes only what is sent."""


class DeploymentCreateInput(TenantChoiceMixin, DeploymentSpecInput):
    name = serializers.CharField(max_length=63, help_text="DNS label: lowercase letters, digits and '-'.")
    model = serializers.IntegerField(min_value=1, help_text="Id of a catalog model of the same tenant.")
    target = serializers.IntegerField(min_value=1, help_text="Id of a target granted to the tenant.")


class DeploymentUpdateInput(DeploymentSpecInput):
    read_only_names = frozenset(set(DEPLOYMENT_OUTPUT_FIELDS) - set(SPEC_OUTPUT_FIELDS) - {"model"})
    model = serializers.IntegerField(
        min_value=1, required=False, help_text="Switch to another model of the same tenant (rolling update)."
    )
    change_reason = serializers.CharField(
        max_length=500, required=False, help_text="Why: recorded with the new revision (template changes)."
    )


class ScaleInput(InputSerializer):
    replicas = spec_input_field(SPEC_BY_NAME["replicas"], required=True)


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
    deployment_name = serializers.SerializerMethodField()

    class Meta:
        model = Replica
        fields = REPLICA_FIELDS
        read_only_fields = REPLICA_FIELDS

    # Lists annotate the name (see ReplicaViewSet.select_list); single objects join.
    def get_deployment_name(self, obj: Replica) -> str:
        return str(getattr(obj, "deployment_name", None) or obj.deployment.name)


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
