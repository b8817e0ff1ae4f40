"""Dashboard forms: parse and type-check input; the services do the domain validation.

Field names match the services' ``field_errors`` keys, so a ``ValidationFailed`` from a service
lands next to the right input (``base.apply_domain_error``).
"""

from __future__ import annotations

from typing import Any

from django import forms

from controlplane.catalog.choices import DType, ModelTask, Pooling
from controlplane.deployments.choices import KubeAuth, TargetKind
from controlplane.deployments.spec import SPEC, Kind, SpecField
from controlplane.deployments.validation import bounds_message
from controlplane.keys.choices import DEFAULT_SCOPES, Scope
from controlplane.tenancy.choices import Role, TokenScope


class ModelRegisterForm(forms.Form):
    name = forms.CharField(max_length=100)
    source = forms.CharField(
        max_length=1000,
        help_text="A directory under <root>/<tenant>/ or <root>/_shared/ (a path or file://), "
        "s3://<bucket>/<prefix>, or hf://<org>/<name>[@<revision>].",
    )
    credential = forms.SlugField(
        max_length=50, required=False, help_text="Name of a source credential, for s3:// and hf:// sources."
    )
    description = forms.CharField(max_length=500, required=False)
    dtype_options = forms.MultipleChoiceField(
        choices=DType.choices, initial=DType.values, widget=forms.CheckboxSelectMultiple, required=False
    )
    allow_unsafe_weights = forms.BooleanField(
        required=False, help_text="Allow pickle weights (.bin/.pt). Platform admins only."
    )
    trust_remote_code = forms.BooleanField(required=False, help_text="Platform admins only.")
    task = forms.ChoiceField(
        choices=[("", "read from the directory"), *ModelTask.choices],
        required=False,
        help_text="An embedding model serves /v1/embeddings; a sentence-transformers directory is one.",
    )
    pooling = forms.ChoiceField(
        choices=[("", "the directory's, else mean"), *[c for c in Pooling.choices if c[0]]],
        required=False,
        help_text="Embedding models only.",
    )


def _number_field(field: SpecField, options: dict[str, Any]) -> forms.Field:
    message = bounds_message(field)
    options |= {
        "required": not field.nullable,
        "min_value": field.low,
        "max_value": field.high,
        "error_messages": {"min_value": message, "max_value": message},
    }
    return forms.IntegerField(**options) if field.kind is Kind.INT else forms.FloatField(**options)


def spec_form_field(field: SpecField) -> forms.Field:
    """The dashboard form field of a spec field (types and bounds; the services check the rest)."""
    options: dict[str, Any] = {"label": field.label, "help_text": field.help_text, "initial": field.initial}
    if field.kind in (Kind.INT, Kind.FLOAT):
        return _number_field(field, options)
    if field.kind is Kind.BOOL:
        return forms.BooleanField(required=False, **options)
    if field.kind is Kind.CHOICE and field.choices is not None:
        return forms.ChoiceField(choices=field.choices.choices, **options)
    if field.kind in (Kind.DEVICE_IDS, Kind.LABELS, Kind.TOLERATIONS):
        return forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 2}), **options)
    return forms.CharField(max_length=field.max_length, required=False, **options)


def _with_spec_fields(cls: type[forms.Form]) -> type[forms.Form]:
    """Add a form field per declared spec field to ``cls`` (and so to its subclasses)."""
    cls.declared_fields.update({f.name: spec_form_field(f) for f in SPEC})
    return cls


@_with_spec_fields
class DeploymentSpecForm(forms.Form):
    """The editable spec of a deployment, one field per declared spec field
    (``controlplane.deployments.spec``); the service checks cross-field rules."""

    def spec(self) -> dict[str, Any]:
        data = {f.name: self.cleaned_data.get(f.name) for f in SPEC}
        for field in SPEC:  # an empty JSON box means the field's default ([] or {})
            if field.kind in (Kind.DEVICE_IDS, Kind.LABELS, Kind.TOLERATIONS) and data[field.name] in (None, ""):
                data[field.name] = field.initial
        if not data.get("served_model_name"):
            data.pop("served_model_name", None)
        return data


class DeploymentCreateForm(DeploymentSpecForm):
    name = forms.CharField(max_length=63, help_text="Lowercase letters, digits and '-'.")
    model: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=None)
    target: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=None)
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
    burst_percent = forms.IntegerField(
        min_value=0,
        max_value=100,
        initial=0,
        required=False,
        label="Burst allowance (%)",
        help_text="0 = at most the limit in any minute",
    )
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


# ----------------------------------------------------------------------------- platform section


class SecretTextarea(forms.Textarea):
    """A credential upload: what was typed is never sent back to the browser, not even when the
    form is shown again with errors."""

    def format_value(self, value: Any) -> str | None:
        return None


def _credential(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        required=False, strip=False, label=label, help_text=help_text, widget=SecretTextarea(attrs={"rows": 4})
    )


def _normalized(value: str) -> str:
    # Browsers send textarea line breaks as CRLF; PEM, OpenSSH and YAML readers expect LF.
    return value.replace("\r\n", "\n").replace("\r", "\n")


JSON_WIDGET = forms.Textarea(attrs={"rows": 2})
CREDENTIAL_FORM_FIELDS = ("tls_ca", "tls_cert", "tls_key", "ssh_key", "kubeconfig")
TARGET_JSON_FIELDS = {
    "model_volume": dict,
    "node_selector": dict,
    "tolerations": list,
    "labels": dict,
    "gpu_inventory": list,
}


class PlatformTargetForm(forms.Form):
    """A target's settings and credential uploads. Credentials left blank are kept as stored;
    ``clear_<name>`` removes one. ``kind`` is fixed once the target exists."""

    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=TargetKind.choices)
    docker_url = forms.CharField(
        max_length=500,
        required=False,
        help_text="unix:///var/run/docker.sock (an allowed socket), tcp://host:2376 with TLS certificates, "
        "or ssh://user@host with a key.",
    )
    publish_host = forms.CharField(
        max_length=253, required=False, initial="127.0.0.1", help_text="Address Docker replicas publish on."
    )
    kube_auth = forms.ChoiceField(choices=[("", "—"), *KubeAuth.choices], required=False, label="Kubernetes auth")
    kube_context = forms.CharField(max_length=200, required=False, help_text="A context of the uploaded kubeconfig.")
    kube_namespace = forms.CharField(max_length=63, required=False, initial="default")
    model_volume = forms.JSONField(
        required=False,
        initial=dict,
        widget=JSON_WIDGET,
        help_text='Kubernetes: {"type": "hostPath", "path": "/models"} or {"type": "pvc", "claimName": "models"}',
    )
    node_selector = forms.JSONField(required=False, initial=dict, widget=JSON_WIDGET)
    tolerations = forms.JSONField(required=False, initial=list, widget=JSON_WIDGET)
    labels = forms.JSONField(required=False, initial=dict, widget=JSON_WIDGET)
    gpu_inventory = forms.JSONField(
        required=False,
        initial=list,
        widget=JSON_WIDGET,
        help_text='e.g. [{"id": "0", "name": "A100", "memory_mb": 81920}]',
    )
    tls_ca = _credential("TLS CA certificate", "PEM; Docker over tcp://.")
    tls_cert = _credential("TLS client certificate", "PEM; Docker over tcp://.")
    tls_key = _credential("TLS client key", "PEM; Docker over tcp://.")
    ssh_key = _credential("SSH private key", "OpenSSH; Docker over ssh://.")
    kubeconfig = _credential("Kubeconfig", "YAML content (not a path); Kubernetes with kubeconfig auth.")

    def __init__(self, *args: Any, stored: set[str] | None = None, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stored = stored or set()
        self.editing = editing
        if editing:
            self.fields["kind"].disabled = True
        for name in CREDENTIAL_FORM_FIELDS:
            if name in self.stored:
                self.fields[name].help_text += " Stored; leave blank to keep it."
                self.fields[f"clear_{name}"] = forms.BooleanField(
                    required=False, label=f"Remove the stored {self.fields[name].label}"
                )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name, empty in TARGET_JSON_FIELDS.items():
            if cleaned.get(name) in (None, ""):
                cleaned[name] = empty()
        for name in CREDENTIAL_FORM_FIELDS:
            cleaned[name] = _normalized(cleaned.get(name) or "")
        return cleaned

    def service_data(self) -> dict[str, Any]:
        """What ``target_create`` / ``target_update`` take: every setting, the credentials that
        were uploaded, and "" for the ones to remove."""
        data = {
            k: v for k, v in self.cleaned_data.items() if k not in CREDENTIAL_FORM_FIELDS and not k.startswith("clear_")
        }
        if self.editing:
            data.pop("kind", None)
        else:  # a new target takes the defaults of the settings left blank
            data = {k: v for k, v in data.items() if v != ""}
        for name in CREDENTIAL_FORM_FIELDS:
            if self.cleaned_data.get(name):
                data[name] = self.cleaned_data[name]
            elif self.cleaned_data.get(f"clear_{name}"):
                data[name] = ""
        return data


class TargetGrantForm(forms.Form):
    tenant: forms.ModelChoiceField[Any] = forms.ModelChoiceField(queryset=None, to_field_name="slug")
    namespace = forms.CharField(
        max_length=63, required=False, help_text="Kubernetes only: this tenant's namespace on the target."
    )

    def __init__(self, *args: Any, tenants: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = tenants  # type: ignore[attr-defined]


class PlatformTenantForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.CharField(max_length=50, required=False, help_text="Derived from the name if blank.")
    owner = forms.CharField(max_length=150, required=False, help_text="Username of the first owner (optional).")
    rpm_limit = forms.IntegerField(min_value=0, initial=0, label="Requests per minute", help_text="0 = unlimited")
    tpm_limit = forms.IntegerField(min_value=0, initial=0, label="Tokens per minute", help_text="0 = unlimited")
    monthly_token_budget = forms.IntegerField(min_value=0, initial=0, help_text="0 = no budget")
    burst_percent = forms.IntegerField(
        min_value=0,
        max_value=100,
        initial=0,
        required=False,
        label="Burst allowance (%)",
        help_text="0 = at most the limit in any minute",
    )


class TenantSettingsForm(forms.Form):
    name = forms.CharField(max_length=100)
    rpm_limit = forms.IntegerField(min_value=0, label="Requests per minute", help_text="0 = unlimited")
    tpm_limit = forms.IntegerField(min_value=0, label="Tokens per minute", help_text="0 = unlimited")
    monthly_token_budget = forms.IntegerField(min_value=0, help_text="0 = no budget")
    burst_percent = forms.IntegerField(
        min_value=0,
        max_value=100,
        initial=0,
        required=False,
        label="Burst allowance (%)",
        help_text="0 = at most the limit in any minute",
    )


def _quota(label: str, kind: type[forms.IntegerField] = forms.IntegerField) -> forms.Field:
    return kind(min_value=0, required=False, label=label, help_text="Blank = unlimited, 0 = none.")


class TenantQuotaForm(forms.Form):
    """Field names are the quota resources ``tenant_quota_set`` takes."""

    gpus = _quota("GPUs")
    gpu_memory_mb = _quota("GPU memory (MB)")
    cpus = _quota("CPUs", forms.FloatField)
    memory_mb = _quota("Memory (MB)")
    replicas = _quota("Replicas")
    deployments = _quota("Deployments")


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    password = forms.CharField(
        max_length=128,
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave blank to generate one; it is shown once.",
    )


class AccessTokenForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.ChoiceField(
        choices=TokenScope.choices,
        initial=TokenScope.READ,
        widget=forms.RadioSelect,
        help_text="Each scope includes the ones above it; never more than your roles allow.",
    )
    expires_in_days = forms.IntegerField(
        min_value=1,
        label="Expires in (days)",
        help_text="Empty: the default lifetime.",
        required=False,
    )


class AccessTokenRevokeForm(forms.Form):
    revoke_keys = forms.BooleanField(required=False, label="Also revoke the API keys this token created")


class OtpCodeForm(forms.Form):
    otp_token = forms.CharField(
        label="Code from your authenticator app",
        min_length=6,
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
