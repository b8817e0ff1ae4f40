"""Bearer secrets (API keys and personal access tokens): format, checksum and digest.

Format: ``<prefix>_<key id>_<secret><checksum>``. The checksum (CRC32 of everything before it,
base62, 6 chars) rejects typos and random garbage without touching the database. Only an
HMAC-SHA256 digest of the secret, keyed with a server-side pepper, is stored; comparisons
are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import zlib
from dataclasses import dataclass

from django.conf import settings

ALPHABET = string.ascii_letters + string.digits
KEY_ID_LEN = 12
SECRET_LEN = 32
CHECKSUM_LEN = 6
MAX_TOKEN_LEN = 128


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LEN)


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def digest(secret: str) -> str:
    """HMAC-SHA256 of a secret with the server-side pepper, hex encoded."""
    pepper = settings.HANGAR_KEY_PEPPER.encode()
    return hmac.new(pepper, secret.encode("ascii"), hashlib.sha256).hexdigest()


def digest_matches(secret: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_digest)


@dataclass(frozen=True)
class IssuedSecret:
    key_id: str
    secret: str
    token: str  # the full string shown to the user once

    @property
    def display_prefix(self) -> str:
        return self.token[: self.token.index("_", 4) + 5] + "…"


@dataclass(frozen=True)
class ParsedToken:
    key_id: str
    secret: str


def issue(prefix: str) -> IssuedSecret:
    key_id = _random(KEY_ID_LEN)
    secret = _random(SECRET_LEN)
    body = f"{prefix}_{key_id}_{secret}"
    return IssuedSecret(key_id=key_id, secret=secret, token=body + _checksum(body))


def parse(token: str, prefix: str) -> ParsedToken | None:
    """Split and checksum-verify a presented token; ``None`` if it is not well formed."""
    if len(token) > MAX_TOKEN_LEN or not token.isascii():
        return None
    head = f"{prefix}_"
    expected_len = len(head) + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
    if len(token) != expected_len or not token.startswith(head):
        return None
    key_id = token[len(head) : len(head) + KEY_ID_LEN]
    if token[len(head) + KEY_ID_LEN] != "_":
        return None
    secret = token[len(head) + KEY_ID_LEN + 1 : -CHECKSUM_LEN]
    if not (key_id.isalnum() and secret.isalnum()):
        return None
    if not hmac.compare_digest(_checksum(token[:-CHECKSUM_LEN]), token[-CHECKSUM_LEN:]):
        return None
    return ParsedToken(key_id=key_id, secret=secret)
