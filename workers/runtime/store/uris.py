"""Model source URIs: ``file:///abs/dir`` (or ``/abs/dir``), ``s3://bucket/prefix``, ``hf://org/name@revision``.

Only the shape is judged here, strictly, so nothing a tenant types reaches a resolver unchecked:
bucket names as S3 allows them, prefixes without ``.``/``..`` parts or control characters,
Hugging Face repository ids and revisions as the hub allows them. The control plane checks a
source with this at registration (``controlplane.catalog.store.uris``), the fetch command checks
the source of its plan again with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFIX_PART = re.compile(r"^[\w.+=@ -]{1,255}$")
HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
HF_REVISION = re.compile(r"^[\w.-][\w./-]{0,99}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class Scheme:
    FILE = "file"
    S3 = "s3"
    HF = "hf"


@dataclass(frozen=True)
class SourceURI:
    """A parsed source: ``path`` for file, ``bucket`` + ``prefix`` for s3, ``repo`` + ``revision`` for hf."""

    scheme: str
    path: str = ""
    bucket: str = ""
    prefix: str = ""
    repo: str = ""
    revision: str = ""

    @property
    def remote(self) -> bool:
        return self.scheme != Scheme.FILE

    def __str__(self) -> str:
        if self.scheme == Scheme.S3:
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if self.scheme == Scheme.HF:
            return f"hf://{self.repo}@{self.revision}"
        return self.path

    def pinned(self, revision: str) -> SourceURI:
        return SourceURI(scheme=self.scheme, repo=self.repo, revision=revision)


class BadSource(ValueError):
    """The source's shape is refused; the message says what a valid one looks like."""


def parse_uri(source: str) -> SourceURI:
    """The ``SourceURI`` of ``source``, or ``BadSource``."""
    if "\0" in source or any(ord(c) < 32 for c in source):
        raise BadSource("Control characters are not allowed.")
    if source.startswith("/"):
        return SourceURI(scheme=Scheme.FILE, path=source)
    scheme, sep, rest = source.partition("://")
    if not sep:
        raise BadSource("Give an absolute directory path or a file://, s3:// or hf:// URI.")
    if scheme == Scheme.FILE:
        if not rest.startswith("/"):
            raise BadSource("A file:// URI names an absolute path: file:///models/<tenant>/<model>.")
        return SourceURI(scheme=Scheme.FILE, path=rest)
    if scheme == Scheme.S3:
        return _parse_s3(rest)
    if scheme == Scheme.HF:
        return _parse_hf(rest)
    raise BadSource(f"Unknown scheme {scheme[:20]!r}: use file://, s3:// or hf://.")


def _parse_s3(rest: str) -> SourceURI:
    bucket, _, prefix = rest.partition("/")
    if not BUCKET.match(bucket) or ".." in bucket:
        raise BadSource("Give s3://<bucket>/<prefix> with a valid bucket name.")
    parts = [p for p in prefix.split("/") if p]
    if any(p in {".", ".."} or not PREFIX_PART.match(p) for p in parts):
        raise BadSource("The S3 prefix may hold letters, digits and _ . + = @ - and spaces, without '.' or '..' parts.")
    return SourceURI(scheme=Scheme.S3, bucket=bucket, prefix="/".join(parts))


def _parse_hf(rest: str) -> SourceURI:
    repo, _, revision = rest.partition("@")
    revision = revision or "main"
    if not HF_REPO.match(repo) or ".." in repo:
        raise BadSource("Give hf://<org>/<name>[@<revision>].")
    if not HF_REVISION.match(revision) or ".." in revision:
        raise BadSource("The revision is a branch, a tag or a commit hash.")
    return SourceURI(scheme=Scheme.HF, repo=repo, revision=revision)
