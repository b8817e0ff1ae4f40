"""Fetch command: ``python -m workers.runtime.fetch --plan FILE --cache DIR [--credentials FILE]``.

Brings one model into a node cache (``workers.runtime.store.cache``) and verifies it, where the
worker's own filesystem is not the node's: a short-lived container on a remote Docker host
(writing into the model's volume), a Kubernetes init container (an ``emptyDir`` or the node's
cache directory). The worker writes the plan; nothing in it is taken unchecked:

* the plan (JSON): ``source`` (``s3://bucket/prefix`` or ``hf://org/name@<commit>``, judged by
  ``workers.runtime.store.uris``), ``content_hash`` and ``manifest`` (every file with size and
  sha256, checked against the hash), ``endpoint_url`` and ``region`` of the tenant's credential;
* the credentials (JSON: ``access_key_id``/``secret_access_key``/``session_token`` for S3,
  ``token`` for the hub) from ``--credentials FILE`` or the ``HANGAR_FETCH_CREDENTIALS``
  variable, never from the command line; none means anonymous, never the node's own identity.

Output: JSON lines on stdout, ``{"event": "verify"|"progress", "bytes_done", "bytes_total"[,
"rate"]}`` while it works, then ``{"event": "done", "path", ...}`` or ``{"event": "error",
"reason", "message"}``; the message is written for the tenant and never holds a credential.
Exit codes:

==  =====================================================================================
0   the model is in ``<cache>/models/<content hash>/``, every file verified
2   bad arguments, plan or credentials (``BadPlan``, ``BadCredentials``)
3   the source lacks the model or a file of it (``SourceNotFound``)
4   the source refused the credentials (``SourceAccessDenied``: wrong secret, unknown key)
5   a file does not match the manifest after a second download (``ChecksumMismatch``:
    the source changed since registration)
6   any other refusal of the source (unsafe file names, too many files...)
74  the cache cannot be written (``CacheUnwritable``: permissions, disk full)
75  the source is unreachable (``SourceUnreachable``): worth retrying
1   anything unexpected (``FetchFailed``, the exception's type only)
==  =====================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from workers.runtime.store.cache import LazySource, ModelCache, Source
from workers.runtime.store.manifest import checked_manifest
from workers.runtime.store.resolvers import SourceError
from workers.runtime.store.uris import COMMIT, BadSource, Scheme, SourceURI, parse_uri

CREDENTIALS_ENV = "HANGAR_FETCH_CREDENTIALS"
REGION = re.compile(r"[a-z0-9-]{0,64}")
MAX_PLAN_BYTES = 8 * 1024 * 1024
MAX_CREDENTIALS_BYTES = 64 * 1024
CREDENTIAL_KEYS = {"access_key_id", "secret_access_key", "session_token", "token"}
EXIT_OK, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_DENIED, EXIT_MISMATCH, EXIT_REFUSED = 0, 2, 3, 4, 5, 6
EXIT_IO, EXIT_TEMPORARY = 74, 75
EXIT_CODES = {
    "BadPlan": EXIT_USAGE,
    "BadCredentials": EXIT_USAGE,
    "SourceNotFound": EXIT_NOT_FOUND,
    "SourceAccessDenied": EXIT_DENIED,
    "ChecksumMismatch": EXIT_MISMATCH,
    "ManifestMismatch": EXIT_MISMATCH,
    "CacheUnwritable": EXIT_IO,
    "SourceUnreachable": EXIT_TEMPORARY,
    "FetchFailed": 1,
}
UNLIMITED = 1 << 62


class Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Plan:
    """What to fetch, checked: the source, the manifest and its hash, where the source lives."""

    uri: SourceURI
    content_hash: str
    manifest: list[dict[str, Any]]
    endpoint_url: str = ""
    region: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(int(e["size"]) for e in self.manifest)


def _endpoint(value: Any) -> str:
    """An ``http(s)://host[:port][/path]`` URL without credentials in it, or ""."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or len(value) > 500 or not value.isprintable():
        raise Refused("BadPlan", "The plan's endpoint is not a URL.")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise Refused("BadPlan", "The plan's endpoint must be an http(s) URL without user information.")
    return value


def read_plan(raw: bytes) -> Plan:
    """The plan in ``raw`` (JSON), every field checked; ``Refused`` otherwise."""
    if len(raw) > MAX_PLAN_BYTES:
        raise Refused("BadPlan", f"The plan is larger than {MAX_PLAN_BYTES} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused("BadPlan", "The plan is not JSON.") from None
    if not isinstance(data, dict):
        raise Refused("BadPlan", "The plan is not a JSON object.")
    try:
        uri = parse_uri(str(data.get("source", "")))
    except BadSource as exc:
        raise Refused("BadPlan", f"The plan's source is refused: {exc}") from None
    if not uri.remote:
        raise Refused("BadPlan", "Only s3:// and hf:// sources are fetched; a file:// source is read where it lies.")
    if uri.scheme == Scheme.HF and not COMMIT.fullmatch(uri.revision):
        raise Refused("BadPlan", "An hf:// source is fetched at the commit pinned at registration, not a branch.")
    region = data.get("region", "")
    if not isinstance(region, str) or not REGION.fullmatch(region):
        raise Refused("BadPlan", "The plan's region is not a region name.")
    try:
        manifest = checked_manifest(data.get("manifest"), data.get("content_hash"))
    except SourceError as exc:
        raise Refused("BadPlan", exc.message) from None
    return Plan(
        uri=uri,
        content_hash=str(data["content_hash"]),
        manifest=manifest,
        endpoint_url=_endpoint(data.get("endpoint_url")),
        region=region,
    )


def read_credentials(raw: bytes | str) -> dict[str, str]:
    """The credentials in ``raw`` (a JSON object of known keys to strings); ``Refused`` otherwise.

    The messages never repeat what was read.
    """
    if not raw:
        return {}
    if len(raw) > MAX_CREDENTIALS_BYTES:
        raise Refused("BadCredentials", "The credentials are too large.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Refused("BadCredentials", "The credentials are not JSON.") from None
    if not isinstance(data, dict) or not set(data) <= CREDENTIAL_KEYS:
        raise Refused("BadCredentials", f"The credentials must be an object with keys among {sorted(CREDENTIAL_KEYS)}.")
    if not all(isinstance(v, str) for v in data.values()):
        raise Refused("BadCredentials", "Every credential must be a string.")
    return {k: v for k, v in data.items() if v}


def make_source(plan: Plan, credentials: dict[str, str]) -> Source:
    """The resolver of the plan's source with ``credentials`` (made only when a file must be read)."""
    from workers.runtime.store.resolvers import HfResolver, S3Access, S3Resolver

    uri = plan.uri
    if uri.scheme == Scheme.S3:
        access = S3Access(
            endpoint_url=plan.endpoint_url,
            region=plan.region,
            access_key_id=credentials.get("access_key_id", ""),
            secret_access_key=credentials.get("secret_access_key", ""),
            session_token=credentials.get("session_token", ""),
        )
        return S3Resolver(bucket=uri.bucket, prefix=uri.prefix, access=access)
    return HfResolver(
        repo=uri.repo, revision=uri.revision, token=credentials.get("token", ""), endpoint=plan.endpoint_url
    )


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)


def _progress(event: str) -> Callable[[int, int, float], None]:
    def report(done: int, total: int, rate: float) -> None:
        emit(event, bytes_done=done, bytes_total=total, rate=round(rate))

    return report


def fetch(plan: Plan, credentials: dict[str, str], cache_dir: Path, limit_bytes: int) -> dict[str, Any]:
    """Fetch and verify; the ``done`` event's fields. Raises ``SourceError`` or ``OSError``."""
    cache = ModelCache(cache_dir, limit_bytes)
    source = LazySource(lambda: make_source(plan, credentials))
    result = cache.ensure(
        plan.content_hash, plan.manifest, source, on_progress=_progress("progress"), on_verify=_progress("verify")
    )
    return {
        "path": str(result.path),
        "content_hash": plan.content_hash,
        "bytes_total": plan.total_bytes,
        "downloaded_bytes": result.downloaded_bytes,
        "fetched": result.fetched[:100],
        "repaired": result.repaired[:100],
        "evicted": result.evicted,
    }


def fail(reason: str, message: str, termination_log: str = "") -> NoReturn:
    emit("error", reason=reason, message=message)
    print(f"hangar-fetch: error: {reason}: {message}", file=sys.stderr, flush=True)
    if termination_log:  # Kubernetes shows it as the init container's termination message
        with contextlib.suppress(OSError):
            Path(termination_log).write_text(f"{reason}: {message}"[:4000])
    raise SystemExit(EXIT_CODES.get(reason, EXIT_REFUSED))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workers.runtime.fetch", description="Fetch a model into a node cache and verify it."
    )
    p.add_argument("--plan", required=True, type=Path, help="the fetch plan (JSON)")
    p.add_argument("--cache", required=True, type=Path, help="the cache directory (models/<content hash>/ inside)")
    p.add_argument(
        "--credentials", type=Path, help=f"the source credentials (JSON); default: ${CREDENTIALS_ENV}, else anonymous"
    )
    p.add_argument(
        "--limit-bytes", type=int, default=0, help="evict least recently used models above this size (0: never)"
    )
    p.add_argument("--termination-log", default="", help="also write a failure here (Kubernetes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = args.termination_log
    # The runtime image runs offline (HF_HUB_OFFLINE=1) so that replicas never call the hub; this
    # command is the one that must. Set before huggingface_hub is first imported.
    os.environ["HF_HUB_OFFLINE"] = "0"
    try:
        plan = read_plan(args.plan.read_bytes())
        if args.credentials is not None:
            credentials = read_credentials(args.credentials.read_bytes())
        else:
            credentials = read_credentials(os.environ.get(CREDENTIALS_ENV, ""))
    except Refused as exc:
        fail(exc.reason, exc.message, log)
    except OSError as exc:
        fail("BadPlan", f"The plan or the credentials cannot be read: {type(exc).__name__}.", log)
    os.environ.pop(CREDENTIALS_ENV, None)
    try:
        done = fetch(plan, credentials, args.cache, args.limit_bytes or UNLIMITED)
    except SourceError as exc:
        fail(exc.reason, exc.message, log)
    except OSError as exc:
        fail("CacheUnwritable", f"The cache cannot be written: {type(exc).__name__} ({exc.strerror or 'error'}).", log)
    except Exception as exc:  # a bug or a library's surprise: its type, never its text (URLs, keys)
        fail("FetchFailed", f"The fetch failed unexpectedly: {type(exc).__name__}.", log)
    emit("done", **done)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
