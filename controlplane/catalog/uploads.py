"""Models uploaded through the API: chunked, resumable, size-limited, checksummed, tenant-scoped.

An upload declares its files up front (name, size, sha256). Chunks are appended at the offset
the server holds (the size of the partial file on disk), so a client that lost a chunk asks
for the offsets and resumes; a chunk cut short is refused whole and leaves nothing behind.
``upload_complete`` verifies every file's sha256, moves the files to
``<store>/<tenant-slug>/<pk>/`` and registers them as a catalog model (a directory source
under the tenant's store folder, see ``controlplane.catalog.sources``).

Names are the client's input and become paths: ``..``, absolute names, backslashes, hidden
parts and control characters are refused, and only safetensors weights plus config and
tokenizer files are accepted. Files are opened with ``O_NOFOLLOW`` under directories this
module creates, so a symlink planted in the store is never written through.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum

from controlplane.audit.services import audit_record
from controlplane.catalog.choices import UploadStatus
from controlplane.catalog.models import Model, Upload
from controlplane.catalog.services import model_register
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.tenancy.models import Tenant
from workers.runtime.store.resolvers import SourceError, safe_name

MAX_FILES = 64
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Safetensors weights, and the config / tokenizer files a model directory holds. No pickle
# (.bin, .pt, .pth, .ckpt, .pkl), no archives, no code.
ALLOWED_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja", ".md")
PIECE = 1024 * 1024


def store_dir() -> Path:
    return Path(settings.HANGAR_MODEL_STORE_DIR)


def partial_dir(upload: Upload) -> Path:
    return store_dir() / ".partial" / str(upload.pk)


def final_dir(upload: Upload) -> Path:
    return store_dir() / upload.tenant.slug / str(upload.pk)


def _files_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, field_errors={"files": [message]})


def check_file_name(name: str) -> str:
    """``name`` if it may become a path in the store, else a ``ValidationFailed``."""
    try:
        safe_name(name)
    except SourceError:
        raise _files_error(f"Refused file name {name[:100]!r}: give a relative path without '..'.") from None
    if any(part.startswith(".") for part in name.split("/")) or any(ord(c) < 32 for c in name):
        raise _files_error(f"Refused file name {name[:100]!r}: no hidden parts or control characters.")
    if not name.endswith(ALLOWED_SUFFIXES):
        raise _files_error(
            f"Refused file {name[:100]!r}: uploads hold safetensors weights and config or tokenizer files "
            f"({', '.join(ALLOWED_SUFFIXES)}) only."
        )
    return name


def _check_files(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not files or len(files) > MAX_FILES:
        raise _files_error(f"Declare between 1 and {MAX_FILES} files.")
    seen: set[str] = set()
    checked = []
    for entry in files:
        name = check_file_name(str(entry["name"]))
        lowered = name.lower()
        if lowered in seen or any(s.startswith(lowered + "/") or lowered.startswith(s + "/") for s in seen):
            raise _files_error(f"{name!r} is declared twice (or as both a file and a folder).")
        seen.add(lowered)
        size, sha = int(entry["size"]), str(entry["sha256"]).lower()
        if size > settings.HANGAR_UPLOAD_MAX_FILE_BYTES:
            raise _files_error(f"{name!r} is larger than {settings.HANGAR_UPLOAD_MAX_FILE_BYTES} bytes.")
        if not SHA256.match(sha):
            raise _files_error(f"{name!r}: give its sha256 as 64 lowercase hex digits.")
        checked.append({"name": name, "size": size, "sha256": sha})
    if not any(str(f["name"]).endswith(".safetensors") for f in checked):
        raise _files_error("An upload holds at least one .safetensors file.")
    return checked


def tenant_store_bytes(tenant: Tenant) -> int:
    """Bytes the tenant holds in the store: open uploads and uploads that are still a model."""
    held = Upload.objects.filter(tenant=tenant).filter(
        Q(status=UploadStatus.OPEN) | Q(status=UploadStatus.COMPLETE, model__isnull=False)
    )
    return int(held.aggregate(total=Sum("total_bytes"))["total"] or 0)


def upload_create(
    *, actor: Actor, tenant: Tenant, name: str, files: list[dict[str, Any]], description: str = ""
) -> Upload:
    """Open an upload of ``files`` that will become the model ``name``; nothing is stored yet."""
    checked = _check_files(files)
    total = sum(f["size"] for f in checked)
    if total > settings.HANGAR_MODEL_MAX_BYTES > 0:
        raise _files_error(f"The model is larger than {settings.HANGAR_MODEL_MAX_BYTES} bytes.")
    with transaction.atomic():
        # The tenant row serialises its uploads' quota check.
        Tenant.objects.select_for_update().get(pk=tenant.pk)
        if Model.objects.filter(tenant=tenant, name=name).exists():
            raise ValidationFailed("Name taken.", field_errors={"name": [f"A model named {name!r} exists."]})
        limit = settings.HANGAR_UPLOAD_TENANT_BYTES
        if tenant_store_bytes(tenant) + total > limit:
            raise ValidationFailed(
                "Store quota exceeded.",
                field_errors={
                    "files": [f"This tenant may hold {limit} bytes in the model store; delete uploads first."]
                },
            )
        upload = Upload.objects.create(
            tenant=tenant, name=name, description=description, files=checked, total_bytes=total
        )
        audit_record(actor=actor, action="upload.create", obj=upload, changes={"name": name, "bytes": total})
    # A folder left under this id by an earlier database is stale: it must not count as received.
    shutil.rmtree(partial_dir(upload), ignore_errors=True)
    partial_dir(upload).mkdir(parents=True)
    return upload


def _declared(upload: Upload, name: str) -> dict[str, Any]:
    for entry in upload.files:
        if entry["name"] == name:
            return dict(entry)
    raise ValidationFailed("Unknown file.", field_errors={"file": [f"{name[:100]!r} is not declared in this upload."]})


def _partial_path(upload: Upload, name: str) -> Path:
    return partial_dir(upload) / name


def received(upload: Upload) -> dict[str, int]:
    """Bytes received so far per declared file (all of them once complete)."""
    if upload.status == UploadStatus.COMPLETE:
        return {f["name"]: f["size"] for f in upload.files}
    out = {}
    for entry in upload.files:
        path = _partial_path(upload, entry["name"])
        out[entry["name"]] = path.lstat().st_size if path.is_file() and not path.is_symlink() else 0
    return out


def _open_partial(upload: Upload, name: str) -> int:
    path = _partial_path(upload, name)
    parent = partial_dir(upload)
    for part in name.split("/")[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise Conflict("The upload's staging folder was tampered with.")
        parent.mkdir(exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)


def _read_chunk(stream: Any, length: int) -> bytes:
    """Exactly ``length`` bytes from ``stream``, or a 400 when the body was cut short."""
    pieces, got = [], 0
    while got < length:
        piece = stream.read(min(PIECE, length - got))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    if got != length:
        raise ValidationFailed(
            "Chunk cut short.",
            field_errors={"chunk": [f"Received {got} of {length} bytes; nothing was stored. Send it again."]},
        )
    return b"".join(pieces)


def upload_chunk(*, upload: Upload, name: str, offset: int, length: int, stream: Any) -> int:
    """Append ``length`` bytes of ``stream`` to file ``name`` at ``offset``; the new offset.

    ``offset`` must be exactly what the server holds (a 409 tells the right one), so a chunk is
    never written twice or with a gap. The chunk is read whole before anything is written.
    """
    entry = _declared(upload, name)
    if length > settings.HANGAR_UPLOAD_CHUNK_BYTES:
        raise ValidationFailed(
            "Chunk too large.", field_errors={"chunk": [f"Send at most {settings.HANGAR_UPLOAD_CHUNK_BYTES} bytes."]}
        )
    if offset + length > entry["size"]:
        raise ValidationFailed(
            "Past the end.", field_errors={"chunk": [f"{name!r} was declared with {entry['size']} bytes."]}
        )
    data = _read_chunk(stream, length)
    with transaction.atomic():
        locked = Upload.objects.select_for_update().get(pk=upload.pk)
        if locked.status != UploadStatus.OPEN:
            raise Conflict("This upload is complete.")
        have = received(locked)[name]
        if offset != have:
            raise Conflict(f"{name!r}: the server holds {have} bytes; send the chunk at offset {have}.")
        fd = _open_partial(locked, name)
        try:
            os.write(fd, data)  # O_APPEND: at ``have``, which the row lock keeps ours
        finally:
            os.close(fd)
    return offset + length


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while piece := fh.read(PIECE):
            digest.update(piece)
    return digest.hexdigest()


def _verify(upload: Upload) -> None:
    have = received(upload)
    missing = [f"{f['name']} ({have[f['name']]}/{f['size']})" for f in upload.files if have[f["name"]] != f["size"]]
    if missing:
        raise Conflict(f"Not every byte was received: {', '.join(missing[:5])}.")
    for entry in upload.files:
        if _sha256(_partial_path(upload, entry["name"])) != entry["sha256"]:
            # The whole file is dropped: the client sends it again from offset 0.
            _partial_path(upload, entry["name"]).unlink()
            raise ValidationFailed(
                "Checksum mismatch.",
                field_errors={
                    "files": [f"{entry['name']!r} does not match its sha256; it was discarded, send it again."]
                },
            )


def upload_complete(*, actor: Actor, upload: Upload) -> Model:
    """Verify every file, move them into the tenant's store folder and register the model."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().select_related("tenant").get(pk=upload.pk)
        if upload.status != UploadStatus.OPEN:
            raise Conflict("This upload is complete.")
        _verify(upload)
        target = final_dir(upload)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)  # stale, as above
        partial_dir(upload).rename(target)
        upload.status = UploadStatus.COMPLETE
        upload.save(update_fields=["status", "updated_at"])
    try:
        model = model_register(
            actor=actor, tenant=upload.tenant, name=upload.name, source=str(target), description=upload.description
        )
    except Exception:
        # Registration refused (a name taken since, no usable weights): the upload is gone.
        shutil.rmtree(target, ignore_errors=True)
        Upload.objects.filter(pk=upload.pk).delete()
        raise
    Upload.objects.filter(pk=upload.pk).update(model=model)
    upload.model = model
    return model


def upload_delete(*, actor: Actor, upload: Upload) -> None:
    """Abort an open upload (its partial files are removed); a completed one stays with its model."""
    with transaction.atomic():
        upload = Upload.objects.select_for_update().get(pk=upload.pk)
        if upload.status == UploadStatus.COMPLETE and upload.model_id is not None:
            raise Conflict("This upload is the model's files; delete the model instead.")
        audit_record(actor=actor, action="upload.delete", obj=upload)
        paths: Iterable[Path] = (partial_dir(upload), final_dir(upload))
        upload.delete()
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
