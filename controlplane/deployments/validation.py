"""Validation of deployment specs and target settings: field-level errors with clear messages."""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from django.conf import settings
from django.utils import timezone

from controlplane.catalog.naming import SERVED_NAME
from controlplane.core.exceptions import ValidationFailed
from controlplane.deployments.choices import KubeAuth, KubeEndpoints, TargetKind
from controlplane.deployments.spec import SPEC_BY_NAME, Kind, SpecField

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
NAME_HELP = "Use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit."
SERVED_NAME_HELP = "Use 1-100 letters, digits and . _ : / -, starting with a letter or digit."
LABEL_MAP_HELP = "Must be an object of string keys to string values (up to 32)."
TOLERATIONS_HELP = "Must be a list of up to 32 tolerations ({key, operator, value, effect})."


class _Invalid(ValueError):
    """One field's problem, worded for the person who sent it (never quoting a credential)."""


# ----------------------------------------------------------------------------- deployments
#
# One check per kind of spec field (``controlplane.deployments.spec``), with the field's bounds.


def bounds_message(field: SpecField) -> str:
    """What a value out of ``field``'s bounds is told (the API and the form say the same)."""
    return " ".join(filter(None, [f"Must be between {field.low:g} and {field.high:g}.", field.note]))


def _check_number(field: SpecField, value: Any) -> int | float | None:
    if value is None and field.nullable:
        return None
    whole = field.kind is Kind.INT
    if isinstance(value, bool) or not isinstance(value, int | float) or (whole and not isinstance(value, int)):
        raise _Invalid("Must be an integer." if whole else "Must be a number.")
    if field.low is not None and field.high is not None and not field.low <= value <= field.high:
        raise _Invalid(bounds_message(field))
    return int(value) if whole else float(value)


def _check_bool(field: SpecField, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("Must be true or false.")
    return value


def _check_choice(field: SpecField, value: Any) -> str:
    values = field.choices.values if field.choices else []
    if value not in values:
        raise _Invalid(f"Choose one of {values}.")
    return str(value)


def _check_served_name(field: SpecField, value: Any) -> str:
    if not isinstance(value, str) or not SERVED_NAME.match(value):
        raise _Invalid(SERVED_NAME_HELP)
    return value


def _check_device_ids(field: SpecField, value: Any) -> list[str]:
    limit = field.max_length or 0
    if (
        not isinstance(value, list)
        or len(value) > limit
        or any(not isinstance(v, str) or not v or len(v) > 64 for v in value)
    ):
        raise _Invalid(" ".join(filter(None, [f"Must be a list of up to {limit} device id(s) (strings).", field.note])))
    return value


def _check_labels(field: SpecField, value: Any) -> dict[str, str]:
    if not _is_label_map(value):
        raise _Invalid(LABEL_MAP_HELP)
    return dict(value)


def _check_tolerations(field: SpecField, value: Any) -> list[dict[str, Any]]:
    if not _is_tolerations(value):
        raise _Invalid(TOLERATIONS_HELP)
    if any(_reserved_toleration(t) for t in value):
        raise _Invalid(
            "Tolerations need a key, and may not tolerate the cluster's own taints "
            f"({', '.join(RESERVED_TAINT_PREFIXES)}...): those nodes are the platform's."
        )
    return list(value)


_KIND_CHECKS: dict[Kind, Callable[[SpecField, Any], Any]] = {
    Kind.INT: _check_number,
    Kind.FLOAT: _check_number,
    Kind.BOOL: _check_bool,
    Kind.CHOICE: _check_choice,
    Kind.SERVED_NAME: _check_served_name,
    Kind.DEVICE_IDS: _check_device_ids,
    Kind.LABELS: _check_labels,
    Kind.TOLERATIONS: _check_tolerations,
}


def _check_deployment_name(value: Any) -> str:
    if not isinstance(value, str) or not DNS_LABEL.match(value):
        raise _Invalid(NAME_HELP)
    return value


def _check_field(key: str, value: Any) -> Any:
    """``value`` of the field ``key`` as stored; fields that are not spec fields pass as they are."""
    if key == "name":
        return _check_deployment_name(value)
    field = SPEC_BY_NAME.get(key)
    if field is None:
        return value
    return _KIND_CHECKS[field.kind](field, value)


def validate_deployment_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Check the fields present in ``data``; raise one ValidationFailed listing every problem."""
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for key, value in data.items():
        try:
            clean[key] = _check_field(key, value)
        except _Invalid as exc:
            errors[key] = [str(exc)]
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


# Taints Kubernetes and cloud providers put on nodes that are not for workloads (control plane,
# not-ready, unreachable, cordoned...). A tenant's deployment may not tolerate them, nor use a
# key-less toleration that tolerates everything; a target's own tolerations (platform input) may.
RESERVED_TAINT_PREFIXES = ("node-role.kubernetes.io/", "node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")


def _reserved_toleration(toleration: dict[str, Any]) -> bool:
    key = str(toleration.get("key") or "")
    return not key or key.startswith(RESERVED_TAINT_PREFIXES)


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


# ----------------------------------------------------------------------------- targets
#
# Targets are platform input (only platform admins write them), still checked strictly: their
# settings decide where the workers connect and with which credentials, so no URL, host, file
# reference or volume may point the workers at the platform's own resources, and no message
# repeats an uploaded credential.

CREDENTIAL_FIELDS = ("tls_ca", "tls_cert", "tls_key", "ssh_key", "kubeconfig")
TLS_FIELDS = ("tls_ca", "tls_cert", "tls_key")
TARGET_SETTINGS = (
    "name",
    "kind",
    "docker_url",
    "publish_host",
    "kube_auth",
    "kube_context",
    "kube_namespace",
    "kube_endpoints",
    "model_volume",
    "node_selector",
    "tolerations",
    "labels",
    "gpu_inventory",
)
MAX_CERT_BYTES = 64 * 1024
MAX_KEY_BYTES = 16 * 1024
MAX_KUBECONFIG_BYTES = 256 * 1024
HOSTNAME_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# A last label that reads as a number makes resolvers parse the whole name as an IPv4 address in
# another notation (2852039166, 0xa9.0xfe.0xa9.0xfe = 169.254.169.254).
NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
DNS_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
DOCKER_URL_HELP = (
    "Use unix:///path (a socket listed in HANGAR_DOCKER_SOCKETS), tcp://host:port or ssh://user@host[:port]."
)
VOLUME_HELP = (
    'Use {"type": "hostPath", "path": "/absolute/path"} or {"type": "pvc", "claimName": "<name>"}, '
    'optionally with "cachePath": "/absolute/path" (the node directory pods fetch s3:// and hf:// models into, '
    "owned by uid 10001; without it each pod fetches into an emptyDir)."
)
# kubeconfig entries that make the worker read its own files or run programs.
KUBECONFIG_USER_REFUSED = ("exec", "auth-provider", "tokenFile", "client-certificate", "client-key")
KUBECONFIG_CLUSTER_REFUSED = ("certificate-authority", "proxy-url")
CREDENTIAL_USE = {
    "tls_ca": "Only for a Docker target with a tcp:// docker_url.",
    "tls_cert": "Only for a Docker target with a tcp:// docker_url.",
    "tls_key": "Only for a Docker target with a tcp:// docker_url.",
    "ssh_key": "Only for a Docker target with an ssh:// docker_url.",
    "kubeconfig": 'Only for a Kubernetes target with kube_auth "kubeconfig".',
}


@dataclass(frozen=True)
class TargetChange:
    """A validated target: every setting, the complete set of credentials to store, and the
    names of the credentials that changed (uploaded, replaced or dropped)."""

    fields: dict[str, Any]
    credentials: dict[str, str]
    credentials_changed: tuple[str, ...]


def validate_target(
    data: Mapping[str, Any], *, current: Mapping[str, Any], current_credentials: Mapping[str, str]
) -> TargetChange:
    """Check ``data`` (settings of ``TARGET_SETTINGS`` and credentials of ``CREDENTIAL_FIELDS``;
    an empty credential removes it) on top of the target's ``current`` settings and credentials.
    Raise one ValidationFailed listing every problem by field."""
    errors: dict[str, list[str]] = {}
    fields = _checked_settings(data, current, errors)
    uploaded = _checked_uploads(data, errors)
    if errors:
        raise ValidationFailed("Invalid target.", field_errors=errors)
    credentials = {k: v for k, v in {**current_credentials, **uploaded}.items() if v}
    used = _check_kind(fields, credentials, errors)
    for key, value in uploaded.items():
        if value and key not in used:
            errors.setdefault(key, []).append(CREDENTIAL_USE[key])
    if errors:
        raise ValidationFailed("Invalid target.", field_errors=errors)
    # Credentials the target no longer uses (a docker_url moved from tcp:// to ssh://) are dropped.
    kept = {k: v for k, v in credentials.items() if k in used}
    changed = tuple(k for k in CREDENTIAL_FIELDS if kept.get(k, "") != current_credentials.get(k, ""))
    return TargetChange(fields=fields, credentials=kept, credentials_changed=changed)


def _checked_settings(
    data: Mapping[str, Any], current: Mapping[str, Any], errors: dict[str, list[str]]
) -> dict[str, Any]:
    """Every setting: the checked value of those in ``data``, the ``current`` one of the others."""
    fields = {key: current[key] for key in TARGET_SETTINGS}
    for key in TARGET_SETTINGS:
        if key in data:
            try:
                fields[key] = _SETTING_CHECKS[key](data[key])
            except _Invalid as exc:
                errors[key] = [str(exc)]
    return fields


def _checked_uploads(data: Mapping[str, Any], errors: dict[str, list[str]]) -> dict[str, str]:
    """The credentials in ``data`` that parse ("" for the ones to remove)."""
    uploaded: dict[str, str] = {}
    for key in CREDENTIAL_FIELDS:
        if key not in data:
            continue
        value = data[key]
        if value is None or value == "":
            uploaded[key] = ""
            continue
        try:
            _CREDENTIAL_CHECKS[key](value)
            uploaded[key] = value
        except _Invalid as exc:
            errors[key] = [str(exc)]
    return uploaded


def _check_kind(fields: dict[str, Any], credentials: dict[str, str], errors: dict[str, list[str]]) -> set[str]:
    """Cross-field rules of the target's kind; the names of the credentials it uses."""
    kind = fields["kind"]
    used: set[str] = set()
    if kind == TargetKind.DOCKER:
        used |= _check_docker(fields, credentials, errors)
    elif fields["docker_url"]:
        errors["docker_url"] = ["Only for Docker targets."]
    if kind == TargetKind.KUBERNETES:
        used |= _check_kubernetes(fields, credentials, errors)
    else:
        for key in ("kube_auth", "kube_context", "model_volume"):
            if fields[key]:
                errors[key] = ["Only for Kubernetes targets."]
        if fields["kube_endpoints"] != KubeEndpoints.POD_IP:
            errors["kube_endpoints"] = ["Only for Kubernetes targets."]
    return used


def _check_docker(fields: dict[str, Any], credentials: dict[str, str], errors: dict[str, list[str]]) -> set[str]:
    url = fields["docker_url"]
    if not url:
        errors["docker_url"] = [f"Required for a Docker target. {DOCKER_URL_HELP}"]
        return set()
    scheme = url.partition("://")[0]
    if scheme == "unix":
        if url not in settings.HANGAR_DOCKER_SOCKETS:
            errors["docker_url"] = [
                "This socket is not allowed: a platform operator must list it in HANGAR_DOCKER_SOCKETS."
            ]
        return set()
    if scheme == "ssh":
        if not credentials.get("ssh_key"):
            errors["ssh_key"] = ["Required for an ssh:// docker_url: upload the private key."]
        return {"ssh_key"}
    return _check_docker_tls(credentials, errors)


def _check_docker_tls(credentials: dict[str, str], errors: dict[str, list[str]]) -> set[str]:
    """A tcp:// docker_url: all three TLS files, the key matching the certificate (or plain tcp://
    where the platform allows it)."""
    present = [k for k in TLS_FIELDS if credentials.get(k)]
    if not present:
        if not settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP:
            errors["docker_url"] = [
                "A tcp:// URL needs TLS client certificates: upload tls_ca, tls_cert and tls_key "
                "(plain tcp:// is refused unless HANGAR_DOCKER_ALLOW_PLAIN_TCP is set, never in production)."
            ]
        return set(TLS_FIELDS)
    for key in TLS_FIELDS:
        if key not in present:
            errors[key] = ["Required with the other TLS files for a tcp:// docker_url."]
    if len(present) == len(TLS_FIELDS):
        cert = _certificates(credentials["tls_cert"], check_dates=False)[0]
        private_key = _private_key(credentials["tls_key"])
        if _public_der(cert.public_key()) != _public_der(private_key.public_key()):
            errors["tls_key"] = ["Does not match the certificate in tls_cert."]
    return set(TLS_FIELDS)


def _check_kubernetes(fields: dict[str, Any], credentials: dict[str, str], errors: dict[str, list[str]]) -> set[str]:
    if not fields["kube_namespace"]:
        errors["kube_namespace"] = ["Required for a Kubernetes target."]
    auth = fields["kube_auth"]
    if auth == KubeAuth.IN_CLUSTER:
        if fields["kube_context"]:
            errors["kube_context"] = ['Only with kube_auth "kubeconfig".']
        return set()
    if auth != KubeAuth.KUBECONFIG:
        errors["kube_auth"] = [f"Required for a Kubernetes target: choose one of {KubeAuth.values}."]
        return set()
    config = credentials.get("kubeconfig")
    if not config:
        errors["kubeconfig"] = ['Required with kube_auth "kubeconfig": upload the kubeconfig\'s content.']
        return {"kubeconfig"}
    contexts, current_context = _kubeconfig(config)
    context = fields["kube_context"] or current_context
    if context not in contexts:
        errors["kube_context"] = [
            f"Name one of the kubeconfig's contexts: {sorted(contexts)}."
            if fields["kube_context"] or not current_context
            else "The kubeconfig's current-context is not one of its contexts; name one."
        ]
    return {"kubeconfig"}


# -- settings, one field at a time


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip() or len(value) > 100:
        raise _Invalid("Give a name of 1-100 characters, without leading or trailing spaces.")
    if not value.isprintable():
        raise _Invalid("Use printable characters only.")
    return value


def _kind(value: Any) -> str:
    if value not in TargetKind.values:
        raise _Invalid(f"Choose one of {TargetKind.values}.")
    return str(value)


def _text(limit: int) -> Any:
    def check(value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit or (value and not value.isprintable()):
            raise _Invalid(f"Must be text of at most {limit} printable characters.")
        return value

    return check


def _docker_url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 500:
        raise _Invalid(DOCKER_URL_HELP)
    if value == "":
        return ""
    if any(c.isspace() or not c.isprintable() for c in value) or "\\" in value:
        raise _Invalid("No spaces, control characters or backslashes. " + DOCKER_URL_HELP)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("unix", "tcp", "ssh"):
        raise _Invalid(DOCKER_URL_HELP)
    if scheme == "unix":
        if not rest.startswith("/") or any(c in rest for c in "?#%"):
            raise _Invalid("Use unix:///absolute/path/to/docker.sock.")
        return value
    _check_remote_docker_url(value, scheme, rest)
    return value


def _check_remote_docker_url(value: str, scheme: str, rest: str) -> None:
    """A tcp:// or ssh:// docker_url: only a user (ssh), a host that is not the machine's own
    or its cloud's metadata service, and a port."""
    if any(c in rest for c in "/?#%"):
        raise _Invalid("No path, query or fragment: only the host and port. " + DOCKER_URL_HELP)
    if rest.endswith(":"):
        raise _Invalid("The port must be a number from 1 to 65535.")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _Invalid("The port must be a number from 1 to 65535.") from None
    if parts.password is not None:
        raise _Invalid("No password in the URL.")
    if scheme == "tcp" and parts.username is not None:
        raise _Invalid("No user name in a tcp:// URL.")
    if scheme == "ssh" and (parts.username is None or not SSH_USER.match(parts.username)):
        raise _Invalid("Name the user: ssh://user@host[:port] (a user name of letters, digits, '.', '_', '-').")
    host = parts.hostname or ""
    problem = _host_problem(host)
    if problem:
        raise _Invalid(problem)
    if scheme == "tcp" and port is None:
        raise _Invalid("Give the port: tcp://host:port.")
    if port is not None and not 1 <= port <= 65535:
        raise _Invalid("The port must be a number from 1 to 65535.")


def _host_problem(host: str) -> str | None:
    """Why ``host`` may not be connected to (None if it may): a malformed name, or an address
    that reaches the machine's own or its cloud's metadata services rather than another host."""
    if not host:
        return "Name a host."
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        refused = ip.is_unspecified or ip.is_link_local or ip.is_multicast
        if isinstance(ip, ipaddress.IPv4Address):
            refused = refused or ip.is_reserved
        return "This address cannot be used (unspecified, link-local, multicast or reserved)." if refused else None
    labels = host.split(".")
    if len(host) > 253 or not all(HOSTNAME_LABEL.match(label) for label in labels) or NUMERIC_LABEL.match(labels[-1]):
        return "Not a valid host name or IP address."
    return None


def _publish_host(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("Give an IP address or a host name.")
    if "://" in value or "@" in value or "/" in value or (value.count(":") == 1):
        raise _Invalid("Only the address: no scheme, port, user or path.")
    problem = _host_problem(value)
    if problem:
        raise _Invalid(problem)
    return value


def _kube_auth(value: Any) -> str:
    if value not in ("", *KubeAuth.values):
        raise _Invalid(f"Choose one of {KubeAuth.values}.")
    return str(value)


def _kube_endpoints(value: Any) -> str:
    if value not in KubeEndpoints.values:
        raise _Invalid(f"Choose one of {KubeEndpoints.values}.")
    return str(value)


def _kube_namespace(value: Any) -> str:
    if not isinstance(value, str) or (value and not DNS_LABEL.match(value)):
        raise _Invalid("Not a valid Kubernetes namespace name (a DNS label).")
    return value


def _directory(value: Any, key: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or len(value) > 4096
        or not value.isprintable()
        or posixpath.normpath(value) != value
        or value == "/"
    ):
        raise _Invalid(f"{key} must be a normalized absolute directory (not /), e.g. /srv/models.")
    return value


def _model_volume(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid(VOLUME_HELP)
    checked: dict[str, str] = {}
    if "cachePath" in value:  # the node cache models fetched by the pods go into
        checked["cachePath"] = _directory(value["cachePath"], "cachePath")
    rest = {k: v for k, v in value.items() if k != "cachePath"}
    if not rest:
        return checked
    if rest.get("type") == "hostPath" and set(rest) == {"type", "path"}:
        return {"type": "hostPath", "path": _directory(rest["path"], "path"), **checked}
    if rest.get("type") == "pvc" and set(rest) == {"type", "claimName"}:
        claim = rest["claimName"]
        if not isinstance(claim, str) or not DNS_SUBDOMAIN.match(claim):
            raise _Invalid("claimName must be the name of a PersistentVolumeClaim (a DNS name).")
        return {"type": "pvc", "claimName": claim, **checked}
    raise _Invalid(VOLUME_HELP + " Nothing else.")


def _label_map_setting(value: Any) -> dict[str, str]:
    if not _is_label_map(value):
        raise _Invalid(LABEL_MAP_HELP)
    return dict(value)


def _tolerations_setting(value: Any) -> list[dict[str, Any]]:
    if not _is_tolerations(value):
        raise _Invalid(TOLERATIONS_HELP)
    return list(value)


def _gpu_inventory(value: Any) -> list[dict[str, Any]]:
    problem = _Invalid('Must be a list of up to 64 GPUs, each an object such as {"id": "0", "memory_mb": 81920}.')
    if not isinstance(value, list) or len(value) > 64:
        raise problem
    for gpu in value:
        if not isinstance(gpu, dict) or len(gpu) > 16:
            raise problem
        for key, item in gpu.items():
            if not isinstance(key, str) or not 0 < len(key) <= 64:
                raise problem
            if isinstance(item, str) and len(item) > 200:
                raise problem
            if not isinstance(item, str | int | float) or (
                key == "memory_mb" and (isinstance(item, bool) or not isinstance(item, int) or item < 0)
            ):
                raise problem
    return list(value)


_SETTING_CHECKS: dict[str, Any] = {
    "name": _name,
    "kind": _kind,
    "docker_url": _docker_url,
    "publish_host": _publish_host,
    "kube_auth": _kube_auth,
    "kube_context": _text(200),
    "kube_namespace": _kube_namespace,
    "kube_endpoints": _kube_endpoints,
    "model_volume": _model_volume,
    "node_selector": _label_map_setting,
    "tolerations": _tolerations_setting,
    "labels": _label_map_setting,
    "gpu_inventory": _gpu_inventory,
}


# -- credentials (parsed with cryptography / PyYAML; messages never quote them)


def _sized(value: Any, limit: int) -> bytes:
    if not isinstance(value, str):
        raise _Invalid("Upload the file's text.")
    raw = value.encode()
    if len(raw) > limit:
        raise _Invalid(f"Larger than {limit // 1024} KiB.")
    return raw


def _certificates(value: Any, *, check_dates: bool = True) -> list[x509.Certificate]:
    raw = _sized(value, MAX_CERT_BYTES)
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError:
        raise _Invalid("Not a PEM certificate.") from None
    if check_dates:
        now = timezone.now()
        for cert in certs:
            if cert.not_valid_after_utc < now:
                raise _Invalid(f"A certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}.")
            if cert.not_valid_before_utc > now:
                raise _Invalid(f"A certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d}.")
    return certs


def _private_key(value: Any) -> PrivateKeyTypes:
    raw = _sized(value, MAX_KEY_BYTES)
    try:
        return serialization.load_pem_private_key(raw, password=None)
    except TypeError:
        raise _Invalid("The key is encrypted: upload it without a passphrase.") from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Invalid("Not a PEM private key.") from None


def _ssh_key(value: Any) -> PrivateKeyTypes:
    raw = _sized(value, MAX_KEY_BYTES)
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" not in raw:
        return _private_key(value)
    try:
        return serialization.load_ssh_private_key(raw, password=None)
    except TypeError:
        raise _Invalid("The key is encrypted: upload it without a passphrase.") from None
    except (ValueError, UnsupportedAlgorithm):
        raise _Invalid("Not an OpenSSH or PEM private key.") from None


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def _kubeconfig(value: Any) -> tuple[set[str], str]:
    """The names of the kubeconfig's contexts and its current-context. Only self-contained
    kubeconfigs pass: no files of the worker, no programs to run, https servers only."""
    raw = _sized(value, MAX_KUBECONFIG_BYTES)
    try:
        doc = yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError):
        raise _Invalid("Not valid YAML.") from None
    if not isinstance(doc, dict):
        raise _Invalid("Not a kubeconfig: expected a mapping with clusters, contexts and users.")
    names = _kubeconfig_names(doc)
    _refuse_worker_files(doc)
    for item in doc["contexts"]:
        context = item["context"]
        if context.get("cluster") not in names["clusters"] or context.get("user") not in names["users"]:
            raise _Invalid(f"Context {item['name']!r} must name one of the kubeconfig's clusters and users.")
    current = doc.get("current-context") or ""
    return names["contexts"], current if isinstance(current, str) else ""


def _kubeconfig_names(doc: dict[str, Any]) -> dict[str, set[str]]:
    """The names of the clusters, contexts and users of a kubeconfig whose sections are well formed."""
    names: dict[str, set[str]] = {}
    for section, inner in (("clusters", "cluster"), ("contexts", "context"), ("users", "user")):
        items = doc.get(section)
        if not isinstance(items, list) or not items:
            raise _Invalid(f"Not a kubeconfig: {section} must be a non-empty list.")
        for item in items:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get(inner), dict)):
                raise _Invalid(f"Not a kubeconfig: every entry of {section} needs a name and a {inner}.")
        names[section] = {item["name"] for item in items}
    return names


def _refuse_worker_files(doc: dict[str, Any]) -> None:
    """No user or cluster entry may read the worker's files, run programs or leave https."""
    for item in doc["users"]:
        refused = [key for key in KUBECONFIG_USER_REFUSED if key in item["user"]]
        if refused:
            raise _Invalid(
                f"User {item['name']!r} uses {refused[0]}: upload a kubeconfig with embedded credentials "
                "(client-certificate-data, client-key-data or token), not files or programs of the worker."
            )
    for item in doc["clusters"]:
        cluster = item["cluster"]
        refused = [key for key in KUBECONFIG_CLUSTER_REFUSED if key in cluster]
        if refused:
            raise _Invalid(
                f"Cluster {item['name']!r} uses {refused[0]}: embed the CA (certificate-authority-data), no files or proxies."
            )
        problem = _kube_server_problem(cluster.get("server"))
        if problem:
            raise _Invalid(f"Cluster {item['name']!r}: {problem}")


def _kube_server_problem(server: Any) -> str | None:
    if not isinstance(server, str) or not server.startswith("https://") or any(c.isspace() for c in server):
        return "server must be an https:// URL."
    try:
        parts = urlsplit(server)
        port = parts.port
    except ValueError:
        return "server has an invalid port."
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return "server must not carry a user, password, query or fragment."
    if port is not None and not 1 <= port <= 65535:
        return "server has an invalid port."
    return _host_problem(parts.hostname or "")


_CREDENTIAL_CHECKS: dict[str, Any] = {
    "tls_ca": _certificates,
    "tls_cert": _certificates,
    "tls_key": _private_key,
    "ssh_key": _ssh_key,
    "kubeconfig": _kubeconfig,
}
