"""Validation of deployment and target specs: field-level errors with clear messages."""

from __future__ import annotations

import re
from typing import Any

from controlplane.catalog.choices import DType, Quantization
from controlplane.core.exceptions import ValidationFailed
from controlplane.deployments.choices import TargetKind

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
MAX_REPLICAS = 64

# field -> (type, minimum, maximum)
NUMERIC_LIMITS: dict[str, tuple[type, float, float]] = {
    "replicas": (int, 0, MAX_REPLICAS),
    "min_replicas": (int, 0, MAX_REPLICAS),
    "max_replicas": (int, 1, MAX_REPLICAS),
    "gpus": (int, 0, 16),
    "cpus": (float, 0.1, 256),
    "memory_mb": (int, 128, 4 * 1024 * 1024),
    "max_batch_size": (int, 1, 512),
    "max_model_len": (int, 16, 1_048_576),
    "max_tokens_cap": (int, 1, 1_048_576),
    "tensor_parallel": (int, 1, 16),
    "target_concurrency": (int, 1, 10_000),
    "scale_to_zero_idle_seconds": (int, 0, 7 * 24 * 3600),
    "host_port": (int, 1024, 65535),
}


def _errors() -> dict[str, list[str]]:
    return {}


def validate_deployment_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Check the fields present in ``data``; raise one ValidationFailed listing every problem."""
    errors = _errors()
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key == "host_port" and value is None:
            clean[key] = None
        elif key in NUMERIC_LIMITS:
            kind, low, high = NUMERIC_LIMITS[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (kind is int and not isinstance(value, int))
            ):
                errors[key] = [f"Must be {'an integer' if kind is int else 'a number'}."]
                continue
            if not low <= value <= high:
                errors[key] = [f"Must be between {low:g} and {high:g}."]
                continue
            clean[key] = kind(value)
        elif key == "name":
            if not isinstance(value, str) or not DNS_LABEL.match(value):
                errors[key] = [
                    "Use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit."
                ]
            else:
                clean[key] = value
        elif key == "served_model_name":
            if not isinstance(value, str) or not SERVED_NAME.match(value):
                errors[key] = ["Use 1-100 letters, digits and . _ : / -, starting with a letter or digit."]
            else:
                clean[key] = value
        elif key == "dtype":
            if value not in DType.values:
                errors[key] = [f"Choose one of {DType.values}."]
            else:
                clean[key] = value
        elif key == "quantization":
            if value not in Quantization.values:
                errors[key] = [f"Choose one of {Quantization.values}."]
            else:
                clean[key] = value
        elif key == "autoscale":
            if not isinstance(value, bool):
                errors[key] = ["Must be true or false."]
            else:
                clean[key] = value
        elif key == "gpu_ids":
            if (
                not isinstance(value, list)
                or len(value) > 16
                or any(not isinstance(v, str) or not v or len(v) > 64 for v in value)
            ):
                errors[key] = ["Must be a list of up to 16 device ids (strings)."]
            else:
                clean[key] = value
        elif key == "node_selector":
            if not _is_label_map(value):
                errors[key] = ["Must be an object of string keys to string values (up to 32)."]
            else:
                clean[key] = value
        elif key == "tolerations":
            if not _is_tolerations(value):
                errors[key] = ["Must be a list of up to 32 tolerations ({key, operator, value, effect})."]
            else:
                clean[key] = value
        else:
            clean[key] = value
    merged_min = clean.get("min_replicas")
    merged_max = clean.get("max_replicas")
    if merged_min is not None and merged_max is not None and merged_min > merged_max:
        errors.setdefault("min_replicas", []).append("Must not exceed max_replicas.")
    if errors:
        raise ValidationFailed("Invalid deployment spec.", field_errors=errors)
    return clean


def _is_label_map(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= 32
        and all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 253 and len(v) <= 63 for k, v in value.items()
        )
    )


TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def _is_tolerations(value: Any) -> bool:
    if not isinstance(value, list) or len(value) > 32:
        return False
    for item in value:
        if not isinstance(item, dict) or not set(item) <= TOLERATION_KEYS:
            return False
        if item.get("operator", "Equal") not in {"Equal", "Exists"}:
            return False
        if item.get("effect", "") not in {"", "NoSchedule", "PreferNoSchedule", "NoExecute"}:
            return False
    return True


def validate_target_fields(data: dict[str, Any]) -> dict[str, Any]:
    errors = _errors()
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key == "kind":
            if value not in TargetKind.values:
                errors[key] = [f"Choose one of {TargetKind.values}."]
                continue
        elif key == "docker_url":
            if value and not str(value).startswith(("unix://", "tcp://", "ssh://", "http://", "https://")):
                errors[key] = ["Use unix:///path, tcp://host:port or ssh://user@host."]
                continue
        elif key == "kube_namespace":
            if value and not DNS_LABEL.match(str(value)):
                errors[key] = ["Not a valid Kubernetes namespace name."]
                continue
        elif key == "node_selector" or key == "labels":
            if not _is_label_map(value):
                errors[key] = ["Must be an object of string keys to string values (up to 32)."]
                continue
        elif key == "tolerations":
            if not _is_tolerations(value):
                errors[key] = ["Must be a list of up to 32 tolerations ({key, operator, value, effect})."]
                continue
        elif key == "model_volume":
            if not isinstance(value, dict) or (value and value.get("type") not in {"hostPath", "pvc"}):
                errors[key] = ['Use {"type": "hostPath", "path": ...} or {"type": "pvc", "claimName": ...}.']
                continue
        clean[key] = value
    if clean.get("kind") == TargetKind.KUBERNETES and not data.get("kube_namespace", "default"):
        errors["kube_namespace"] = ["Required for a Kubernetes target."]
    if errors:
        raise ValidationFailed("Invalid target.", field_errors=errors)
    return clean
