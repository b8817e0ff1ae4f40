"""A resolver for a tenant's source: the tenant's credential decrypted, the endpoint checked.

An endpoint URL is a tenant's input that the control plane and the workers will call: it must be
one the platform lists in ``HANGAR_MODEL_SOURCE_ENDPOINTS`` (an empty endpoint means AWS or the
public hub), so a source cannot make the workers probe the platform's own network.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from controlplane.catalog.choices import CredentialKind
from controlplane.catalog.store.resolvers import FileResolver, HfResolver, Resolver, S3Access, S3Resolver, SourceError
from controlplane.catalog.store.uris import Scheme, SourceURI, parse_source
from controlplane.core.crypto import decrypt_json

if TYPE_CHECKING:
    from controlplane.catalog.models import Model, SourceCredential

KIND_OF_SCHEME = {Scheme.S3: CredentialKind.S3, Scheme.HF: CredentialKind.HF}


def normalize_endpoint(url: str) -> str:
    return url.strip().rstrip("/")


def endpoint_allowed(url: str) -> bool:
    """Whether ``url`` ("" for the default endpoint) is one the platform allows sources to call."""
    if not url:
        return True
    allowed = {normalize_endpoint(u) for u in settings.HANGAR_MODEL_SOURCE_ENDPOINTS}
    return normalize_endpoint(url) in allowed


def remote_resolver(uri: SourceURI, credential: SourceCredential | None) -> Resolver:
    """The resolver of a remote ``uri`` with ``credential`` (None: anonymous, default endpoint)."""
    endpoint = credential.endpoint_url if credential is not None else ""
    if not endpoint_allowed(endpoint):
        # Checked again here, not only when the credential was saved: the list may have shrunk.
        raise SourceError("The credential's endpoint is not one the platform allows.", reason="EndpointRefused")
    secret = decrypt_json(credential.secret) if credential is not None else {}
    if uri.scheme == Scheme.S3:
        access = S3Access(
            endpoint_url=endpoint,
            region=credential.region if credential is not None else "",
            access_key_id=secret.get("access_key_id", ""),
            secret_access_key=secret.get("secret_access_key", ""),
            session_token=secret.get("session_token", ""),
        )
        return S3Resolver(bucket=uri.bucket, prefix=uri.prefix, access=access)
    if uri.scheme == Scheme.HF:
        return HfResolver(repo=uri.repo, revision=uri.revision, token=secret.get("token", ""), endpoint=endpoint)
    raise SourceError(f"No remote resolver for {uri.scheme}://.")


def model_resolver(model: Model) -> Resolver:
    """The resolver a node fetches ``model`` with (its stored, pinned source)."""
    uri = parse_source(model.source)
    if uri.scheme == Scheme.FILE:
        return FileResolver(Path(uri.path))
    return remote_resolver(uri, model.credential)
