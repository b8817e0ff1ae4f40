"""Bearer secrets (API keys and personal access tokens): format, checksum and digest.

Format: ``<prefix>_<key id>_<secret><checksum>``. The checksum is keyed: HMAC-SHA256 of
everything before it under a key derived from the server-side pepper (``HANGAR_KEY_PEPPER``),
base62, 6 characters (about 2^35.7 values). Only the server can make one, so typos, garbage and
forged well-formed tokens are all rejected without touching the database: a forger has one
chance in ~5.7e10 per attempt, and the gateway throttles failures per address.

Tokens issued before keyed checksums carry a CRC32 checksum, which anyone can compute. ``parse``
reports them as ``legacy``; callers decide whether they still accept them (the gateway accepts
one only for a key id flagged ``legacy_checksum`` when the keys were migrated, held in memory,
so forged CRC32 tokens cost no database lookup either). Re-issuing a key replaces it.

Only an HMAC-SHA256 digest of the secret, keyed with the pepper, is stored; comparisons are
constant-time. Rotating the pepper invalidates every key and token, checksums included.
"""

from __future__ import annotations

import functools
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
    """The keyed checksum of ``body``: only a holder of the pepper can compute it."""
    mac = hmac.new(_checksum_key(settings.HANGAR_KEY_PEPPER), body.encode("ascii"), hashlib.sha256).digest()
    return _base62(int.from_bytes(mac[:8], "big"), CHECKSUM_LEN)


@functools.lru_cache(maxsize=4)
def _checksum_key(pepper: str) -> bytes:
    # Derived, so that checksums (which every token shows) and digests use different keys.
    return hmac.new(pepper.encode(), b"hangar token checksum v1", hashlib.sha256).digest()


def _legacy_checksum(body: str) -> str:
    """CRC32, as tokens issued before keyed checksums carry (anyone can compute it)."""
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
    legacy: bool = False  # a CRC32 checksum: the token predates keyed checksums


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
    body, checksum = token[:-CHECKSUM_LEN], token[-CHECKSUM_LEN:]
    if hmac.compare_digest(_checksum(body), checksum):
        return ParsedToken(key_id=key_id, secret=secret)
    if hmac.compare_digest(_legacy_checksum(body), checksum):
        return ParsedToken(key_id=key_id, secret=secret, legacy=True)
    return None
