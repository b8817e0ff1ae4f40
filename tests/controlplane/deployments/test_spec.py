"""The deployment spec is declared once (``controlplane.deployments.spec``); every layer that
shows, takes, checks or applies a spec field is built from that declaration. These tests fail on
drift: a field declared but missing from the model, the API, the form, the services' field sets
or (for runtime fields) the replica's ``ReplicaSpec`` and runtime arguments, or a spec column
added to ``Deployment`` around the declaration."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.db.models import NOT_PROVIDED

from console.dashboard.forms import DeploymentCreateForm, DeploymentSpecForm
from controlplane.core.exceptions import ValidationFailed
from controlplane.deployments import services
from controlplane.deployments.api.serializers import (
    SPEC_OUTPUT_FIELDS,
    DeploymentCreateInput,
    DeploymentSpecInput,
    DeploymentUpdateInput,
)
from controlplane.deployments.models import Deployment
from controlplane.deployments.spec import MAX_GPUS, REPLICA_SPEC_FIELDS, SPEC, Kind, SpecField
from controlplane.deployments.validation import validate_deployment_fields
from tests.factories import DeploymentFactory
from workers.drivers.base import ReplicaSpec
from workers.reconciler import replica_spec
from workers.runtime.__main__ import build_parser

# Deployment columns that are not spec: identity, ownership and reconcile bookkeeping.
NOT_SPEC = {
    "id",
    "created_at",
    "updated_at",
    "tenant",
    "name",
    "model",
    "target",
    "desired_state",
    "last_request_at",
    "faults",  # platform admins only (revisions.deployment_faults_set), not a tenant spec field
    "generation",
    "template_generation",
    "observed_generation",
    "phase",
    "phase_message",
    "conditions",
    "ready_replicas",
    "progress",
    "reconciled_at",
    "reconcile_lease_owner",
    "reconcile_lease_until",
}
NAMES = [f.name for f in SPEC]


def test_every_spec_column_of_deployment_is_declared_once() -> None:
    columns = {f.name for f in Deployment._meta.concrete_fields}
    assert columns - NOT_SPEC == set(NAMES)
    assert len(NAMES) == len(set(NAMES))
    assert "tensor_parallel" not in columns  # accepted once, never reached a replica: removed


@pytest.mark.parametrize("field", SPEC, ids=NAMES)
def test_the_model_column_matches_the_declaration(field: SpecField) -> None:
    column = Deployment._meta.get_field(field.name)
    assert column.null == field.nullable
    if field.default is None:
        assert column.default is NOT_PROVIDED or column.default is None
    else:
        assert column.default == field.default
    if field.kind is Kind.CHOICE:
        assert field.choices is not None and column.choices == field.choices.choices


@pytest.mark.parametrize("field", SPEC, ids=NAMES)
def test_the_api_takes_and_shows_every_field(field: SpecField) -> None:
    assert field.name in SPEC_OUTPUT_FIELDS
    for serializer in (DeploymentSpecInput(), DeploymentCreateInput(), DeploymentUpdateInput()):
        api_field = serializer.fields[field.name]
        assert not api_field.required and not api_field.read_only
        if field.kind in (Kind.INT, Kind.FLOAT):
            assert (api_field.min_value, api_field.max_value) == (field.low, field.high)  # type: ignore[attr-defined]


@pytest.mark.parametrize("field", SPEC, ids=NAMES)
def test_the_dashboard_form_has_every_field(field: SpecField) -> None:
    for form_class in (DeploymentSpecForm, DeploymentCreateForm):
        form_field = form_class.base_fields[field.name]
        assert form_field.label == field.label
        if field.kind in (Kind.INT, Kind.FLOAT):
            assert (form_field.min_value, form_field.max_value) == (field.low, field.high)  # type: ignore[attr-defined]


def test_the_services_know_which_fields_replace_replicas() -> None:
    spec_fields, template_fields = services.SPEC_FIELDS, services.TEMPLATE_FIELDS
    assert spec_fields == {*NAMES, "model"}
    assert template_fields == {f.name for f in SPEC if f.template} | {"model"}
    # What a replica sees must replace it when it changes (else old replicas keep old values),
    # except the served name, which the gateway maps without restarting anything.
    assert {f.name for f in REPLICA_SPEC_FIELDS} - template_fields == {"served_model_name"}


@pytest.mark.django_db
def test_every_runtime_field_reaches_the_replica() -> None:
    """A deployment with a non-default value in every field: ``replica_spec`` carries each value a
    replica sees, and each runtime flag is in the arguments the runtime's own parser accepts."""
    deployment = DeploymentFactory(
        served_model_name="chat-x",
        gpus=MAX_GPUS,
        gpu_ids=["3"],
        cpus=2.5,
        memory_mb=4096,
        dtype="bfloat16",
        quantization="none",
        max_batch_size=7,
        max_model_len=1234,
        node_selector={"zone": "a"},
        tolerations=[{"key": "team", "operator": "Exists"}],
        host_port=20000,
    )
    spec = replica_spec(deployment, slot=0)
    replica_attributes = {f.name: f for f in dataclasses.fields(ReplicaSpec)}
    for field in REPLICA_SPEC_FIELDS:
        assert field.name in replica_attributes, f"ReplicaSpec lacks the declared field {field.name}"
        assert getattr(spec, field.name) == field.replica_value(getattr(deployment, field.name))
        attribute = replica_attributes[field.name]
        default = attribute.default
        if attribute.default_factory is not dataclasses.MISSING:
            default = attribute.default_factory()
        if field.default is not None:
            assert default == field.replica_value(field.initial), f"ReplicaSpec's default of {field.name} drifted"
    args = spec.runtime_args(model="/model", host="0.0.0.0", port=8000)
    parsed = vars(build_parser().parse_args(args))
    flagged = [f for f in SPEC if f.flag]
    assert {"dtype", "max_model_len", "gpus"} <= {f.name for f in flagged}
    for field in flagged:
        value = field.flag_value(getattr(deployment, field.name))
        assert [field.flag, value] == args[args.index(field.flag) : args.index(field.flag) + 2]
        assert str(parsed[field.flag.lstrip("-").replace("-", "_")]) == value
    assert parsed["device"] == "cuda"


def test_cpu_replicas_get_no_device_flag() -> None:
    base = {
        "instance": "i",
        "tenant_id": 1,
        "deployment_id": 1,
        "deployment_name": "d",
        "name": "d-g1-0",
        "slot": 0,
        "generation": 1,
        "model_path": "/m",
        "served_model_name": "d",
    }
    args = ReplicaSpec(**base).runtime_args(model="/model", host="h", port=1)
    assert "--device" not in args
    assert vars(build_parser().parse_args(args))["device"] == "cpu"


# ----------------------------------------------------------------------------- validation from the declaration


@pytest.mark.parametrize("field", [f for f in SPEC if f.kind in (Kind.INT, Kind.FLOAT)], ids=lambda f: f.name)
def test_bounds_and_types_come_from_the_declaration(field: SpecField) -> None:
    assert field.low is not None and field.high is not None
    assert validate_deployment_fields({field.name: field.high})[field.name] == field.high
    with pytest.raises(ValidationFailed) as caught:
        validate_deployment_fields({field.name: field.high + 1})
    assert caught.value.field_errors[field.name][0].startswith(f"Must be between {field.low:g} and {field.high:g}.")
    with pytest.raises(ValidationFailed) as caught:
        validate_deployment_fields({field.name: "1"})
    assert caught.value.field_errors[field.name] == [
        "Must be an integer." if field.kind is Kind.INT else "Must be a number."
    ]


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"gpus": 2}, "gpus", "Multi-GPU sharding"),
        ({"gpu_ids": ["0", "1"]}, "gpu_ids", "Multi-GPU sharding"),
        ({"dtype": "float8"}, "dtype", "Choose one of"),
        ({"autoscale": "yes"}, "autoscale", "true or false"),
        ({"served_model_name": "-x"}, "served_model_name", "starting with a letter or digit"),
        ({"name": "Chat"}, "name", "lowercase"),
        ({"node_selector": {"a": 1}}, "node_selector", "string values"),
        ({"tolerations": [{"operator": "Exists"}]}, "tolerations", "may not tolerate"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas", "Must not exceed max_replicas"),
    ],
)
def test_special_checks_keep_their_messages(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_deployment_fields(data)
    assert words in " ".join(caught.value.field_errors[field])


def test_the_api_and_form_say_why_gpus_stop_at_one() -> None:
    api = DeploymentSpecInput(data={"gpus": 2})
    assert not api.is_valid()
    assert "Multi-GPU sharding" in str(api.errors["gpus"][0])
    form = DeploymentSpecForm(data={"gpus": 2})
    assert not form.is_valid()
    assert "Multi-GPU sharding" in form.errors["gpus"][0]
    assert DeploymentSpecInput(data={"tensor_parallel": 2}).is_valid() is False
