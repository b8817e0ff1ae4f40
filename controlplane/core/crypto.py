"""Encryption at rest of credentials that platform admins upload (TLS keys, SSH keys, kubeconfigs).

A ``MultiFernet`` over ``settings.HANGAR_ENCRYPTION_KEYS`` (newest first): the newest key
encrypts, every key decrypts, so keys rotate by putting a new one in front and re-encrypting
(``manage.py rotate_encryption_keys``). Without configured keys (development and tests only;
production refuses to start) one key is derived from ``SECRET_KEY``.

Values are JSON objects of strings; the plaintext never leaves this module except to the driver
that needs it, and is never logged or written to audit rows.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialsUnreadable(Exception):
    """Stored credentials cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        derived = hashlib.sha256(b"hangar-credentials-at-rest:" + secret_key.encode()).digest()
        keys = (base64.urlsafe_b64encode(derived).decode(),)
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except ValueError:
            raise ImproperlyConfigured(
                f"HANGAR_ENCRYPTION_KEYS: key {position} is not a Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def cipher() -> MultiFernet:
    return _cipher(tuple(settings.HANGAR_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt_json(data: dict[str, str]) -> str:
    """Ciphertext of ``data`` (``""`` for no data, so an empty column means "nothing stored")."""
    clean = {k: v for k, v in data.items() if v}
    if not clean:
        return ""
    return cipher().encrypt(json.dumps(clean, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        raw = cipher().decrypt(token.encode())
    except InvalidToken:
        raise CredentialsUnreadable(
            "Stored credentials cannot be decrypted with HANGAR_ENCRYPTION_KEYS (a key was removed too early?)."
        ) from None
    value = json.loads(raw)
    return {str(k): str(v) for k, v in value.items()}


def rotate(token: str) -> str:
    """``token`` re-encrypted with the newest key."""
    if not token:
        return ""
    try:
        return cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable("Stored credentials cannot be decrypted with HANGAR_ENCRYPTION_KEYS.") from None
