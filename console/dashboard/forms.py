"""Dashboard forms: parse and type-check input; the services do the domain validation.

Field names match the services' ``field_errors`` keys, so a ``ValidationFailed`` from a service
lands next to the right input (``base.apply_domain_error``).
"""

from __future__ import annotations

from typing import Any

from django import forms

from controlplane.catalog.choices import DType, Quantization
from controlplane.deployments.choices import TargetKind
from controlplane.keys.choices import DEFAULT_SCOPES, Scope
from controlplane.tenancy.choices import Role


class ModelRegisterForm(forms.Form):
    name = forms.CharField(max_length=100)
    source = forms.CharField(
        max_length=1000, help_text="Absolute path of the model directory, under <root>/<tenant>/ or <root>/_shared/."
    )
    description = forms.CharField(max_length=500, required=False)
    dtype_options = forms.MultipleChoiceField(
        choices=DType.choices, initial=DType.values, widget=forms.CheckboxSelectMultiple, required=False
    )
    allow_unsafe_weights = forms.BooleanField(
        required=False, help_text="Allow pickle weights (.bin/.pt). Platform admins only."
    )
    trust_remote_code = forms.BooleanField(required=False, help_text="Platform admins only.")


class TargetForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=TargetKind.choices)
    docker_url = forms.CharField(
        max_length=500, required=False, help_text="unix:///var/run/docker.sock or tcp://host:2376"
    )
    kubeconfig_path = forms.CharField(max_length=500, required=False, help_text="Path of a kubeconfig on the workers.")
    kube_context = forms.CharField(max_length=200, required=False)
    kube_namespace = forms.CharField(max_length=63, required=False, initial="default")
    gpu_inventory = forms.JSONField(
        required=False, initial=list, help_text='e.g. [{"id": "0", "name": "A100", "memory_mb": 81920}]'
    )
    labels = forms.JSONField(required=False, initial=dict)

    def clean_gpu_inventory(self) -> Any:
        value = self.cleaned_data.get("gpu_inventory")
        if value in (None, ""):
            return []
        if not isinstance(value, list) or any(not isinstance(item, dict) for item in value):
            raise forms.ValidationError("Give a JSON list of objects, one per GPU.")
        return value

    def clean_labels(self) -> Any:
        value = self.cleaned_data.get("labels")
        return {} if value in (None, "") else value


SPEC_INT_FIELDS = (
    "replicas",
    "min_replicas",
    "max_replicas",
    "gpus",
    "memory_mb",
    "max_batch_size",
    "max_model_len",
    "max_tokens_cap",
    "tensor_parallel",
    "target_concurrency",
    "scale_to_zero_idle_seconds",
)


class DeploymentSpecForm(forms.Form):
    """The editable spec of a deployment (the service checks ranges and cross-field rules)."""

    served_model_name = forms.CharField(max_length=100, required=False, help_text="Name clients send as “model”.")
    replicas = forms.IntegerField(min_value=0, initial=1)
    min_replicas = forms.IntegerField(min_value=0, initial=1)
    max_replicas = forms.IntegerField(min_value=1, initial=1)
    gpus = forms.IntegerField(min_value=0, initial=0, label="GPUs per replica")
    cpus = forms.FloatField(min_value=0.1, initial=1.0, label="CPUs per replica")
    memory_mb = forms.IntegerField(min_value=128, initial=2048, label="Memory (MB)")
    dtype = forms.ChoiceField(choices=DType.choices, initial=DType.FLOAT32)
    quantization = forms.ChoiceField(choices=Quantization.choices, initial=Quantization.NONE)
    max_batch_size = forms.IntegerField(min_value=1, initial=32)
    max_model_len = forms.IntegerField(min_value=16, initial=2048)
    max_tokens_cap = forms.IntegerField(min_value=1, initial=1024)
    tensor_parallel = forms.IntegerField(min_value=1, initial=1)
    autoscale = forms.BooleanField(required=False)
    target_concurrency = forms.IntegerField(min_value=1, initial=8)
    scale_to_zero_idle_seconds = forms.IntegerField(min_value=0, initial=0, help_text="0 = never scale to zero")

    def spec(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data.pop("name", None)
        data.pop("model", None)
        data.pop("target", None)
        if not data.get("served_model_name"):
            data.pop("served_model_name", None)
        return data


class DeploymentCreateForm(DeploymentSpecForm):
    name = forms.CharField(max_length=63, help_text="Lowercase letters, digits and '-'.")
    model: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=None)  # type: ignore[arg-type]
    target: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=None)  # type: ignore[arg-type]
    field_order = ["name", "model", "target", "served_model_name"]

    def __init__(self, *args: Any, models: Any, targets: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models  # type: ignore[attr-defined]
        self.fields["target"].queryset = targets  # type: ignore[attr-defined]


class ScaleForm(forms.Form):
    replicas = forms.IntegerField(min_value=0)


class DeleteForm(forms.Form):
    confirm = forms.CharField(max_length=100, help_text="Type the deployment's name to confirm.")

    def __init__(self, *args: Any, expected: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"]
        if value != self.expected:
            raise forms.ValidationError(f"Type {self.expected!r} to confirm.")
        return value


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, initial=DEFAULT_SCOPES, widget=forms.CheckboxSelectMultiple
    )
    allowed_models = forms.MultipleChoiceField(
        choices=(), required=False, widget=forms.CheckboxSelectMultiple, help_text="None ticked = every model."
    )
    rpm_limit = forms.IntegerField(min_value=0, initial=0, label="Requests per minute", help_text="0 = tenant limit")
    tpm_limit = forms.IntegerField(min_value=0, initial=0, label="Tokens per minute", help_text="0 = tenant limit")
    monthly_token_budget = forms.IntegerField(min_value=0, initial=0, help_text="0 = no budget of its own")
    expires_at = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}), help_text="UTC; empty = never"
    )

    def __init__(self, *args: Any, served_names: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = [(name, name) for name in served_names]  # type: ignore[attr-defined]


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class AuditFilterForm(forms.Form):
    action = forms.CharField(max_length=64, required=False)
    object_type = forms.CharField(max_length=64, required=False)
    actor_repr = forms.CharField(max_length=150, required=False, label="Actor")
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))


class UsageFilterForm(forms.Form):
    days = forms.IntegerField(min_value=1, max_value=366, initial=30, required=False)
    api_key = forms.IntegerField(required=False, widget=forms.HiddenInput)
    model = forms.CharField(max_length=100, required=False)


class TenantSwitchForm(forms.Form):
    tenant = forms.IntegerField()
