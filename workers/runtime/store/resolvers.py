"""Resolvers: list a source's files and read them, one class per scheme, behind one interface.

Nothing here imports Django: the worker fetching into a node's cache uses the same classes as
the control plane registering a model. Credentials come in as arguments and are never logged;
errors are ``SourceError`` with a message fit for the tenant (no credentials, no stack).

A resolver never falls back to ambient credentials: an ``s3://`` source without a secret is read
anonymously (unsigned), an ``hf://`` source without a token sends none, so a tenant cannot
borrow the worker's own cloud identity or hub token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

CHUNK = 1024 * 1024
_COMMIT = re.compile(r"[0-9a-f]{40}")
MAX_FILES = 10_000


class SourceError(Exception):
    """The source cannot be read; ``message`` is shown to the tenant, ``reason`` is a CamelCase tag."""

    def __init__(self, message: str, *, reason: str = "SourceUnreadable") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class RemoteFile:
    name: str  # relative POSIX path inside the model, checked by ``safe_name``
    size: int
    sha256: str = ""  # when the source states it without a read (hub LFS files)


def safe_name(name: str) -> str:
    """``name`` if it is a plain relative path inside the model, else a ``SourceError``.

    A bucket or repository may hold keys like ``../../etc/cron.d/x``: they must never become
    paths in a node's cache.
    """
    path = PurePosixPath(name)
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(part in {"", ".", ".."} for part in name.split("/"))
        or len(name) > 1000
        or path.is_absolute()
    ):
        raise SourceError(f"The source holds a file with a refused name: {name[:100]!r}.", reason="UnsafeFileName")
    return name


class Resolver(Protocol):
    """What every source offers: its files, and their bytes from an offset."""

    def files(self) -> list[RemoteFile]: ...

    def stream(self, name: str, start: int = 0) -> Iterator[bytes]: ...

    def read(self, name: str, start: int, length: int) -> bytes: ...


def _check_count(count: int) -> None:
    if count > MAX_FILES:
        raise SourceError(f"More than {MAX_FILES} files: this is not a model.", reason="TooManyFiles")


# ----------------------------------------------------------------------------- file://


class FileResolver:
    """A directory on the control plane's (or node's) filesystem. Symlinks inside are refused."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> list[RemoteFile]:
        found: list[RemoteFile] = []
        for count, (dirpath, dirnames, filenames) in enumerate(os.walk(self.root)):
            _check_count(count + len(found))
            base = Path(dirpath)
            for entry in [*dirnames, *filenames]:
                if (base / entry).is_symlink():
                    rel = (base / entry).relative_to(self.root).as_posix()
                    raise SourceError(f"The model directory holds a symlink: {rel}.", reason="UnsafeFileName")
            for filename in filenames:
                path = base / filename
                found.append(RemoteFile(safe_name(path.relative_to(self.root).as_posix()), path.stat().st_size))
        return sorted(found, key=lambda f: f.name)

    def _path(self, name: str) -> Path:
        return self.root / safe_name(name)

    def stream(self, name: str, start: int = 0) -> Iterator[bytes]:
        with self._path(name).open("rb") as fh:
            fh.seek(start)
            while chunk := fh.read(CHUNK):
                yield chunk

    def read(self, name: str, start: int, length: int) -> bytes:
        with self._path(name).open("rb") as fh:
            fh.seek(start)
            return fh.read(length)


# ----------------------------------------------------------------------------- s3://


@dataclass(frozen=True)
class S3Access:
    """Where and as whom to reach S3 (AWS, MinIO, Ceph...): endpoint, region, keys."""

    endpoint_url: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""


_S3_ERRORS = {
    "NoSuchBucket": ("The bucket does not exist.", "SourceNotFound"),
    "NoSuchKey": ("A file of the model is missing from the bucket.", "SourceNotFound"),
    "404": ("A file of the model is missing from the bucket.", "SourceNotFound"),
    "AccessDenied": ("Access denied: check the source credentials.", "SourceAccessDenied"),
    "403": ("Access denied: check the source credentials.", "SourceAccessDenied"),
    "InvalidAccessKeyId": ("The access key is not known to the S3 server.", "SourceAccessDenied"),
    "SignatureDoesNotMatch": ("The secret key is wrong.", "SourceAccessDenied"),
}


class S3Resolver:
    def __init__(self, *, bucket: str, prefix: str, access: S3Access) -> None:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        signed = bool(access.access_key_id and access.secret_access_key)
        config = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            signature_version=None if signed else UNSIGNED,
            s3={"addressing_style": "path"},
        )
        # An explicit session, never the environment's or the instance's credentials.
        session = boto3.session.Session(
            aws_access_key_id=access.access_key_id or None,
            aws_secret_access_key=access.secret_access_key or None,
            aws_session_token=access.session_token or None,
            region_name=access.region or "us-east-1",
            botocore_session=None,
        )
        self.client = session.client("s3", endpoint_url=access.endpoint_url or None, config=config)
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""

    def _call(self, func: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return func(**kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            message, reason = _S3_ERRORS.get(code, (f"The S3 server refused the request ({code[:60]}).", "SourceError"))
            raise SourceError(message, reason=reason) from None
        except BotoCoreError as exc:
            raise SourceError(
                f"The S3 server cannot be reached: {type(exc).__name__}.", reason="SourceUnreachable"
            ) from None

    def files(self) -> list[RemoteFile]:
        found: list[RemoteFile] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                name = obj["Key"][len(self.prefix) :]
                if name and not name.endswith("/"):
                    found.append(RemoteFile(safe_name(name), int(obj["Size"])))
            _check_count(len(found))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
        if not found:
            raise SourceError("No files under this bucket and prefix.", reason="SourceNotFound")
        return sorted(found, key=lambda f: f.name)

    def _get(self, name: str, byte_range: str = "") -> Any:
        kwargs = {"Bucket": self.bucket, "Key": self.prefix + safe_name(name)}
        if byte_range:
            kwargs["Range"] = byte_range
        return self._call(self.client.get_object, **kwargs)["Body"]

    def stream(self, name: str, start: int = 0) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        body = self._get(name, f"bytes={start}-" if start else "")
        try:
            yield from body.iter_chunks(CHUNK)
        except BotoCoreError as exc:
            raise SourceError(f"The download broke off: {type(exc).__name__}.", reason="SourceUnreachable") from None
        finally:
            body.close()

    def read(self, name: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        body = self._get(name, f"bytes={start}-{start + length - 1}")
        try:
            return bytes(body.read())
        finally:
            body.close()


# ----------------------------------------------------------------------------- hf://


class HfResolver:
    """A Hugging Face repository at one revision, through ``huggingface_hub`` (hub or mirror).

    ``commit`` is the revision pinned to its commit hash: every read names the commit, so a
    branch that moves after registration cannot change what a node fetches.
    """

    def __init__(self, *, repo: str, revision: str, token: str = "", endpoint: str = "") -> None:
        from huggingface_hub import HfApi

        self.repo = repo
        self.revision = revision
        self.token: str | bool = token or False  # False: never the worker's own stored token
        self.endpoint = endpoint.rstrip("/") or None
        self.api = HfApi(endpoint=self.endpoint, token=self.token)
        self._files: list[RemoteFile] | None = None
        # A pinned source names its commit: a node reads files without asking the hub for it.
        self.commit = revision if _COMMIT.fullmatch(revision) else ""

    def _hub_error(self, exc: Exception) -> SourceError:
        from huggingface_hub import errors

        if type(exc).__name__ == "OfflineModeIsEnabled":
            return SourceError("This process runs with HF_HUB_OFFLINE set: hf:// sources cannot be read.")

        if isinstance(exc, errors.RevisionNotFoundError):
            return SourceError(f"Revision {self.revision!r} does not exist in {self.repo}.", reason="SourceNotFound")
        if isinstance(exc, errors.GatedRepoError):
            return SourceError("The repository is gated: the token has no access.", reason="SourceAccessDenied")
        if isinstance(exc, errors.RepositoryNotFoundError):
            return SourceError(
                f"Repository {self.repo} not found (or the token has no access).", reason="SourceNotFound"
            )
        if isinstance(exc, errors.EntryNotFoundError):
            return SourceError("A file of the model is missing from the repository.", reason="SourceNotFound")
        return SourceError(f"The hub refused the request: {type(exc).__name__}.", reason="SourceError")

    def resolve(self) -> None:
        from huggingface_hub import errors

        try:
            info = self.api.model_info(self.repo, revision=self.revision, files_metadata=True, timeout=30)
        except (errors.HfHubHTTPError, errors.HFValidationError) as exc:
            raise self._hub_error(exc) from None
        except (errors.HTTPError, OSError) as exc:
            if type(exc).__name__ == "OfflineModeIsEnabled":
                raise self._hub_error(exc) from None
            raise SourceError(f"The hub cannot be reached: {type(exc).__name__}.", reason="SourceUnreachable") from None
        self.commit = str(info.sha or "")
        files = []
        for sibling in info.siblings or []:
            lfs = getattr(sibling, "lfs", None)
            sha = str(lfs.sha256) if lfs is not None and getattr(lfs, "sha256", None) else ""
            files.append(RemoteFile(safe_name(sibling.rfilename), int(sibling.size or 0), sha))
            _check_count(len(files))
        if not self.commit or not files:
            raise SourceError("The hub returned no commit or no files for this revision.", reason="SourceNotFound")
        self._files = sorted(files, key=lambda f: f.name)

    def files(self) -> list[RemoteFile]:
        if self._files is None:
            self.resolve()
        assert self._files is not None
        return self._files

    def _url(self, name: str) -> str:
        from huggingface_hub import hf_hub_url

        if not self.commit:
            self.resolve()
        return hf_hub_url(self.repo, safe_name(name), revision=self.commit, endpoint=self.endpoint)

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return {**build_hf_headers(token=self.token), **extra}

    def stream(self, name: str, start: int = 0) -> Iterator[bytes]:
        from huggingface_hub import errors, get_session
        from huggingface_hub.utils import hf_raise_for_status

        headers = self._headers({"Range": f"bytes={start}-"} if start else {})
        try:
            with get_session().stream("GET", self._url(name), headers=headers, follow_redirects=True, timeout=60) as r:
                hf_raise_for_status(r)
                yield from r.iter_bytes(CHUNK)
        except errors.HfHubHTTPError as exc:
            raise self._hub_error(exc) from None
        except (errors.HTTPError, OSError) as exc:
            raise SourceError(f"The download broke off: {type(exc).__name__}.", reason="SourceUnreachable") from None

    def read(self, name: str, start: int, length: int) -> bytes:
        from huggingface_hub import errors, get_session
        from huggingface_hub.utils import hf_raise_for_status

        if length <= 0:
            return b""
        headers = self._headers({"Range": f"bytes={start}-{start + length - 1}"})
        try:
            response = get_session().get(self._url(name), headers=headers, follow_redirects=True, timeout=60)
            hf_raise_for_status(response)
        except errors.HfHubHTTPError as exc:
            raise self._hub_error(exc) from None
        except (errors.HTTPError, OSError) as exc:
            raise SourceError(f"The hub cannot be reached: {type(exc).__name__}.", reason="SourceUnreachable") from None
        return bytes(response.content[:length])
