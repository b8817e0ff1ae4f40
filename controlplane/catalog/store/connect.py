"""A resolver for a tenant's source: the tenant's credential decrypted, the endpoint checked.

An endpoint URL is a tenant's input that the control plane and the workers will call: it must be
one the platform lists in ``HANGAR_MODEL_SOURCE_ENDPOINTS`` (an empty endpoint means AWS or the
public hub), so a source cannot make the workers probe the platform's own network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from controlplane.catalog.choices import CredentialKind
from controlplane.catalog.store.uris import parse_source
from controlplane.core.crypto import decrypt_json
from workers.runtime.store.resolvers import FileResolver, HfResolver, Resolver, S3Access, S3Resolver, SourceError
from workers.runtime.store.uris import Scheme, SourceURI

if TYPE_CHECKING:
    from controlplane.catalog.models import Model, SourceCredential

KIND_OF_SCHEME = {Scheme.S3: CredentialKind.S3, Scheme.HF: CredentialKind.HF}
# The keys of a credential's secret, by kind: what the API accepts and what a fetch hands on.
SECRET_FIELDS = {
    CredentialKind.S3: ("access_key_id", "secret_access_key", "session_token"),
    CredentialKind.HF: ("token",),
}


def normalize_endpoint(url: str) -> str:
    return url.strip().rstrip("/")


def endpoint_allowed(url: str) -> bool:
    """Whether ``url`` ("" for the default endpoint) is one the platform allows sources to call."""
    if not url:
        return True
    allowed = {normalize_endpoint(u) for u in settings.HANGAR_MODEL_SOURCE_ENDPOINTS}
    return normalize_endpoint(url) in allowed


@dataclass(frozen=True)
class SourceAccess:
    """Where and as whom a remote source is read: the credential's endpoint (checked), region and
    decrypted secret (anonymous, default endpoint: all empty)."""

    endpoint_url: str = ""
    region: str = ""
    secret: dict[str, str] = field(default_factory=dict, repr=False)


def source_access(scheme: str, credential: SourceCredential | None) -> SourceAccess:
    """The access of ``credential`` for a ``scheme`` source: only the secret keys that scheme uses."""
    endpoint = credential.endpoint_url if credential is not None else ""
    if not endpoint_allowed(endpoint):
        # Checked again here, not only when the credential was saved: the list may have shrunk.
        raise SourceError("The credential's endpoint is not one the platform allows.", reason="EndpointRefused")
    secret = decrypt_json(credential.secret) if credential is not None else {}
    keys = SECRET_FIELDS[KIND_OF_SCHEME[scheme]] if scheme in KIND_OF_SCHEME else ()
    return SourceAccess(
        endpoint_url=endpoint,
        region=credential.region if credential is not None else "",
        secret={k: str(secret[k]) for k in keys if secret.get(k)},
    )


def remote_resolver(uri: SourceURI, credential: SourceCredential | None) -> Resolver:
    """The resolver of a remote ``uri`` with ``credential`` (None: anonymous, default endpoint)."""
    access = source_access(uri.scheme, credential)
    if uri.scheme == Scheme.S3:
        s3 = S3Access(
            endpoint_url=access.endpoint_url,
            region=access.region,
            access_key_id=access.secret.get("access_key_id", ""),
            secret_access_key=access.secret.get("secret_access_key", ""),
            session_token=access.secret.get("session_token", ""),
        )
        return S3Resolver(bucket=uri.bucket, prefix=uri.prefix, access=s3)
    if uri.scheme == Scheme.HF:
        return HfResolver(
            repo=uri.repo, revision=uri.revision, token=access.secret.get("token", ""), endpoint=access.endpoint_url
        )
    raise SourceError(f"No remote resolver for {uri.scheme}://.")


def model_resolver(model: Model) -> Resolver:
    """The resolver a node fetches ``model`` with (its stored, pinned source)."""
    uri = parse_source(model.source)
    if uri.scheme == Scheme.FILE:
        return FileResolver(Path(uri.path))
    return remote_resolver(uri, model.credential)


def model_fetch_plan(model: Model) -> tuple[dict[str, Any], dict[str, str]]:
    """What a node's fetch command (``workers.runtime.fetch``) needs for a remote ``model``: the
    plan (its pinned source, manifest and content hash, the credential's endpoint and region) and,
    apart, the credentials, which travel only as a file or a Secret, never in a command line."""
    uri = parse_source(model.source)
    if not uri.remote:
        raise SourceError("Only s3:// and hf:// sources are fetched by nodes.", reason="SourceNotRemote")
    access = source_access(uri.scheme, model.credential)
    plan = {
        "source": str(uri),
        "content_hash": model.content_hash,
        "manifest": [{"name": e["name"], "size": e["size"], "sha256": e["sha256"]} for e in model.manifest],
        "endpoint_url": access.endpoint_url,
        "region": access.region,
    }
    return plan, access.secret
