"""Credentials for target tests, made on the spot with ``cryptography``: a CA and a client
certificate for Docker over TLS, an SSH key, a self-contained kubeconfig. Each carries a marker
(``SECRET``) so a test can grep responses and audit rows for any trace of it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

SECRET = "s3cr3t-marker-7f1c"  # appears inside every credential made here (a token, a CN)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert(subject: str, key: Any, issuer: str, issuer_key: Any, *, not_before: datetime, not_after: datetime) -> str:
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def docker_tls(*, expired: bool = False) -> dict[str, str]:
    """``tls_ca``, ``tls_cert`` and ``tls_key`` (PEM) of a client of a Docker daemon."""
    now = datetime.now(UTC)
    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert(
        "hangar-test-ca",
        ca_key,
        "hangar-test-ca",
        ca_key,
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=30),
    )
    window = (
        (now - timedelta(days=30), now - timedelta(days=1))
        if expired
        else (now - timedelta(days=1), now + timedelta(days=30))
    )
    cert = _cert(f"client-{SECRET}", client_key, "hangar-test-ca", ca_key, not_before=window[0], not_after=window[1])
    return {"tls_ca": ca, "tls_cert": cert, "tls_key": _pem_key(client_key)}


def other_private_key() -> str:
    """A valid PEM key that matches no certificate made here."""
    return _pem_key(ec.generate_private_key(ec.SECP256R1()))


def ssh_private_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()


def kubeconfig(
    *,
    contexts: tuple[str, ...] = ("prod",),
    current: str = "prod",
    server: str = "https://k8s.example.com:6443",
    user: dict[str, Any] | None = None,
) -> str:
    """A self-contained kubeconfig whose user holds a bearer token containing ``SECRET``."""
    ca = base64.b64encode(docker_tls()["tls_ca"].encode()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": f"token-{SECRET}"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u"}} for name in contexts],
        "current-context": current,
    }
    return yaml.safe_dump(doc)
