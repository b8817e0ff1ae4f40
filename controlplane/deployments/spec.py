"""The deployment spec, declared once.

``DeploymentSpec`` is the abstract model ``Deployment`` takes its spec columns from. Each column
is declared by one call below, which also says everything else about the field: its kind and
bounds (checked by ``validation``), its label and help (the API schema and the dashboard form),
whether a change replaces the replicas (``template=True``: the services bump
``template_generation``, which rolls the replicas) and how it reaches a replica (a ``flag`` of
``python -m workers.runtime``, a ``container`` setting the drivers apply, or neither: the control
plane acts on it). ``SPEC`` lists the declared fields in order; the API serializer, the dashboard
form, the validation, the services' field sets and the reconciler's ``ReplicaSpec`` are built
from it, and ``tests/controlplane/deployments/test_spec.py`` fails if one of them drifts.

Adding a field: one call in ``DeploymentSpec``, then ``manage.py makemigrations deployments``.
A field that becomes a runtime flag or a container setting is also an attribute of
``workers.drivers.base.ReplicaSpec`` (the drivers' typed contract; the test names it if missing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from django.db import models

from controlplane.catalog.choices import DType, Quantization

MAX_REPLICAS = 64
# One replica loads its model onto one device: ``workers.runtime`` has no tensor or pipeline
# parallelism, so a second GPU per replica would be reserved and never used.
MAX_GPUS = 1
NO_SHARDING = "Multi-GPU sharding (tensor parallel) is not supported yet: a replica uses at most one GPU."


class Kind(StrEnum):
    """What a field holds; each layer maps a kind to its own field type and check."""

    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CHOICE = "choice"
    SERVED_NAME = "served_name"  # a model name clients send to the gateway
    DEVICE_IDS = "device_ids"  # a list of GPU device ids
    LABELS = "labels"  # a Kubernetes label map (node selector)
    TOLERATIONS = "tolerations"  # a list of Kubernetes tolerations


def _same(value: Any) -> str | None:
    return str(value)


def _cuda_if_any(gpus: Any) -> str | None:
    return "cuda" if gpus else None


@dataclass(frozen=True)
class SpecField:
    """Everything Hangar knows about one spec field, besides its database column."""

    kind: Kind
    label: str
    help_text: str = ""
    default: Any = None  # a value, or a callable for lists and dicts; None: no default
    low: float | None = None
    high: float | None = None
    choices: type[models.TextChoices] | None = None
    max_length: int | None = None  # of a string, or of a list
    nullable: bool = False
    template: bool = False  # a change replaces the replicas (rolling)
    flag: str = ""  # the ``python -m workers.runtime`` flag it becomes
    flag_value: Callable[[Any], str | None] = _same  # the flag's value (None: leave the flag out)
    container: str = ""  # the process/container/pod setting it becomes, for readers
    note: str = ""  # said after the bounds when a value is out of them
    name: str = ""  # set from the model field's name

    @property
    def on_replica(self) -> bool:
        """The replica sees this field (as a flag or a container setting); it is a ``ReplicaSpec`` attribute."""
        return bool(self.flag or self.container)

    @property
    def initial(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def flag_args(self, value: Any) -> list[str]:
        """The runtime arguments this field's ``value`` becomes."""
        if not self.flag:
            return []
        text = self.flag_value(value)
        return [] if text is None else [self.flag, text]

    def replica_value(self, value: Any) -> Any:
        """``value`` as ``ReplicaSpec`` holds it."""
        if self.kind is Kind.DEVICE_IDS:
            return tuple(value or ())
        if self.kind is Kind.LABELS:
            return dict(value or {})
        if self.kind is Kind.TOLERATIONS:
            return list(value or [])
        return value


# Declarations by the creation counter of their model field (unique per field, and kept when
# Django copies an abstract model's fields into ``Deployment``); named once the class exists.
_DECLARED: dict[int, SpecField] = {}
_F = TypeVar("_F", bound="models.Field[Any, Any]")


def _declare(field: _F, info: SpecField) -> _F:
    _DECLARED[field.creation_counter] = info
    return field


def _integer(*, default: int, low: int, high: int, **info: Any) -> models.PositiveIntegerField[int, int]:
    field: models.PositiveIntegerField[int, int] = models.PositiveIntegerField(default=default)
    return _declare(field, SpecField(Kind.INT, default=default, low=low, high=high, **info))


def _optional_integer(*, low: int, high: int, **info: Any) -> models.PositiveIntegerField[int | None, int | None]:
    field: models.PositiveIntegerField[int | None, int | None] = models.PositiveIntegerField(null=True, blank=True)
    return _declare(field, SpecField(Kind.INT, low=low, high=high, nullable=True, **info))


def _optional_number(*, low: float, high: float, **info: Any) -> models.FloatField[float | None, float | None]:
    field: models.FloatField[float | None, float | None] = models.FloatField(null=True, blank=True)
    return _declare(field, SpecField(Kind.FLOAT, low=low, high=high, nullable=True, **info))


def _number(*, default: float, low: float, high: float, **info: Any) -> models.FloatField[float, float]:
    field: models.FloatField[float, float] = models.FloatField(default=default)
    return _declare(field, SpecField(Kind.FLOAT, default=default, low=low, high=high, **info))


def _switch(*, default: bool, **info: Any) -> models.BooleanField[bool, bool]:
    field: models.BooleanField[bool, bool] = models.BooleanField(default=default)
    return _declare(field, SpecField(Kind.BOOL, default=default, **info))


def _choice(
    choices: type[models.TextChoices], *, default: str, max_length: int, **info: Any
) -> models.CharField[str, str]:
    field: models.CharField[str, str] = models.CharField(
        max_length=max_length, choices=choices.choices, default=default
    )
    return _declare(field, SpecField(Kind.CHOICE, default=default, choices=choices, max_length=max_length, **info))


def _served_name(**info: Any) -> models.CharField[str, str]:
    field: models.CharField[str, str] = models.CharField(max_length=100)
    return _declare(field, SpecField(Kind.SERVED_NAME, max_length=100, **info))


def _json(kind: Kind, *, default: type[list[Any]] | type[dict[str, Any]], **info: Any) -> models.JSONField[Any, Any]:
    field: models.JSONField[Any, Any] = models.JSONField(default=default, blank=True)
    return _declare(field, SpecField(kind, default=default, **info))


class DeploymentSpec(models.Model):
    """The spec of a deployment: what a tenant asks for. One declaration per field."""

    served_model_name = _served_name(
        label="Served model name",
        help_text="The name clients send as “model” to the gateway (unique per tenant; default: the model's name).",
        flag="--served-model-name",
    )
    replicas = _integer(default=1, low=0, high=MAX_REPLICAS, label="Replicas")
    min_replicas = _integer(default=1, low=0, high=MAX_REPLICAS, label="Min replicas", help_text="Autoscaling floor.")
    max_replicas = _integer(default=1, low=1, high=MAX_REPLICAS, label="Max replicas", help_text="Autoscaling ceiling.")
    gpus = _integer(
        default=0,
        low=0,
        high=MAX_GPUS,
        label="GPUs per replica",
        help_text="0 (CPU) or 1: multi-GPU sharding is not supported yet.",
        template=True,
        flag="--device",
        flag_value=_cuda_if_any,
        container="a GPU device request (Docker) or an nvidia.com/gpu limit (Kubernetes)",
        note=NO_SHARDING,
    )
    gpu_ids = _json(
        Kind.DEVICE_IDS,
        default=list,
        max_length=MAX_GPUS,
        label="GPU device ids",
        help_text='Pin the replica\'s GPU to this device id (Docker targets), e.g. ["3"].',
        template=True,
        container="the device ids of the GPU device request (Docker)",
        note=NO_SHARDING,
    )
    cpus = _number(default=1.0, low=0.1, high=256, label="CPUs per replica", template=True, container="a CPU limit")
    memory_mb = _integer(
        default=2048,
        low=128,
        high=4 * 1024 * 1024,
        label="Memory (MB)",
        help_text="Memory limit per replica.",
        template=True,
        container="a memory limit",
    )
    dtype = _choice(DType, default=DType.FLOAT32, max_length=16, label="Data type", template=True, flag="--dtype")
    quantization = _choice(
        Quantization,
        default=Quantization.NONE,
        max_length=8,
        label="Quantization",
        template=True,
        flag="--quantization",
    )
    max_batch_size = _integer(
        default=32,
        low=1,
        high=512,
        label="Max batch size",
        help_text="Sequences a replica decodes together.",
        template=True,
        flag="--max-batch-size",
    )
    max_model_len = _integer(
        default=2048,
        low=16,
        high=1_048_576,
        label="Max model length",
        help_text="Prompt plus completion tokens per request.",
        template=True,
        flag="--max-model-len",
    )
    max_tokens_cap = _integer(
        default=1024,
        low=1,
        high=1_048_576,
        label="Max tokens cap",
        help_text="The gateway caps each request's max_tokens at this.",
    )
    node_selector = _json(
        Kind.LABELS,
        default=dict,
        label="Node selector",
        help_text="Kubernetes node labels the replicas need (the target's own labels win).",
        template=True,
        container="the pod's nodeSelector (Kubernetes)",
    )
    tolerations = _json(
        Kind.TOLERATIONS,
        default=list,
        max_length=32,
        label="Tolerations",
        help_text="Kubernetes tolerations ({key, operator, value, effect}) added to the target's.",
        template=True,
        container="the pod's tolerations (Kubernetes)",
    )
    # Fixed host port for local/docker targets (replica i listens on host_port + i); None = any
    # free port. A clash is a permanent error, not a silent move to another port.
    host_port = _optional_integer(
        low=1024,
        high=65535,
        label="Host port",
        help_text="Local and Docker targets: replica i listens on host_port + i. Empty: any free port.",
        template=True,
        container="the published host port (local, Docker)",
    )
    autoscale = _switch(default=False, label="Autoscale", help_text="Scale between min and max replicas on load.")
    target_concurrency = _integer(
        default=8,
        low=1,
        high=10_000,
        label="Target concurrency",
        help_text="In-flight requests per replica the autoscaler aims for.",
    )
    scale_to_zero_idle_seconds = _integer(
        default=0,
        low=0,
        high=7 * 24 * 3600,
        label="Scale to zero after (s)",
        help_text="0 = never scale to zero.",
    )
    # The autoscaler's memory (workers.autoscaler); empty: the HANGAR_AUTOSCALE_* setting.
    autoscale_stable_seconds = _optional_integer(
        low=2,
        high=3600,
        label="Stable window (s)",
        help_text="The autoscaler averages load over this window (empty: the platform default, 60).",
    )
    autoscale_panic_seconds = _optional_integer(
        low=1,
        high=600,
        label="Panic window (s)",
        help_text="A burst averaged over this window scales up at once (empty: the platform default, 6).",
    )
    autoscale_panic_threshold = _optional_number(
        low=1.1,
        high=10.0,
        label="Panic threshold",
        help_text="Panic when the burst is this many times the target for the replicas there are (default 2.0).",
    )
    autoscale_scale_down_delay_seconds = _optional_integer(
        low=0,
        high=3600,
        label="Scale-down stabilization (s)",
        help_text="Scale down only to the highest count asked for over this window (default 300).",
    )
    autoscale_tolerance = _optional_number(
        low=0.0,
        high=0.5,
        label="Tolerance",
        help_text="Load within this fraction of the target changes nothing (default 0.1).",
    )

    class Meta:
        abstract = True


def _collect() -> tuple[SpecField, ...]:
    fields = DeploymentSpec._meta.local_fields
    return tuple(dataclasses.replace(_DECLARED[f.creation_counter], name=f.name) for f in fields)


SPEC: tuple[SpecField, ...] = _collect()
SPEC_BY_NAME: dict[str, SpecField] = {f.name: f for f in SPEC}
# Changing one of these replaces the replicas (the services bump template_generation).
TEMPLATE_SPEC_FIELDS: frozenset[str] = frozenset(f.name for f in SPEC if f.template)
# The fields a replica sees, as attributes of ``workers.drivers.base.ReplicaSpec``.
REPLICA_SPEC_FIELDS: tuple[SpecField, ...] = tuple(f for f in SPEC if f.on_replica)
RUNTIME_FLAG_FIELDS: tuple[SpecField, ...] = tuple(f for f in SPEC if f.flag)


def replica_values(deployment: DeploymentSpec) -> dict[str, Any]:
    """The spec values of ``deployment`` that a replica sees, keyed like ``ReplicaSpec``."""
    return {f.name: f.replica_value(getattr(deployment, f.name)) for f in REPLICA_SPEC_FIELDS}


def runtime_flags(values: Any) -> list[str]:
    """The ``python -m workers.runtime`` arguments of the spec values held by ``values``
    (an object with the fields as attributes: a ``ReplicaSpec`` or a deployment)."""
    return [arg for f in RUNTIME_FLAG_FIELDS for arg in f.flag_args(getattr(values, f.name))]
