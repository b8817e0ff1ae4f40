"""Remote models on a Docker host the worker does not share a filesystem with: one volume per model.

A model is fetched by a short-lived container of the runtime image running the fetch command
(``python -m workers.runtime.fetch``) on that host's daemon, into a named volume of its own
(``hangar-model-<instance>-<content hash prefix>``: Docker 20.10 has no volume subpaths, so a
volume cannot hold several models that replicas mount one at a time). Replicas mount the volume
read-only. The next replica or deployment of the same model on that host runs the fetch again,
which only verifies (sha256 of every file against the manifest) and repairs what does not match.

Nothing a tenant sets chooses anything here: the volume's and the container's names derive from
the instance and the content hash (64 hex digits, the sha256 of the manifest, checked), the image
is the platform's runtime image, the command and mounts are fixed. The plan (source, manifest,
endpoint) and the tenant's credential are put into the container as files before it starts
(``put_archive``), readable only by the runtime's user: not in its command, labels or
environment, so ``docker inspect`` does not show them; the container is removed when it ends.

Eviction: the volumes of this instance whose models are not used by any container (Docker
refuses to remove a volume in use anyway), least recently used first, until the models on the
host fit the target's cache size. Sizes are the manifests' (a label set at creation).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import docker.errors
import requests.exceptions
from docker.types import Mount

from workers.drivers.base import (
    LABEL_INSTANCE,
    FetchedModel,
    ModelFetch,
    PermanentDriverError,
    TemporaryDriverError,
)

if TYPE_CHECKING:
    from workers.drivers.docker import DockerDriver

LABEL_ROLE = "hangar.role"
LABEL_MODEL_HASH = "hangar.model-hash"
LABEL_MODEL_BYTES = "hangar.model-bytes"
ROLE_MODEL = "model"  # a model's volume
ROLE_FETCH = "model-fetch"  # the container filling it
FETCH_LABEL = "io.hangar.runtime.fetch"  # the runtime image has the fetch command (deploy/runtime/Dockerfile)
CACHE_MOUNT = "/cache"  # where the fetch container mounts the volume (owned by the runtime user in the image)
INPUT_PARENT = "/run"
INPUT_DIR = "/run/hangar-fetch"
RUNTIME_UID = 10001
FETCH_COMMAND = [
    "--plan",
    f"{INPUT_DIR}/plan.json",
    "--credentials",
    f"{INPUT_DIR}/credentials.json",
    "--cache",
    CACHE_MOUNT,
]
FETCH_MEMORY = "1g"
OWNER_REMOVES_S = 10
STALL_S = 600.0  # no line from the fetch for this long (it reports every 0.5 s while it works): stuck
HASH = re.compile(r"[0-9a-f]{64}")
REASON = re.compile(r"[A-Za-z]{1,40}")
TEMPORARY_REASONS = {"SourceUnreachable"}
MAX_MESSAGE = 500


def volume_name(instance: str, content_hash: str) -> str:
    return f"hangar-model-{instance}-{content_hash[:32]}"


def fetch_container_name(instance: str, content_hash: str) -> str:
    return f"hangar-{instance}-fetch-{content_hash[:32]}"


def _input_archive(plan: str, credentials: str) -> bytes:
    """``hangar-fetch/{plan,credentials}.json``, owned by the runtime's user, readable by it alone."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("hangar-fetch")
        folder.type, folder.mode, folder.uid, folder.gid = tarfile.DIRTYPE, 0o500, RUNTIME_UID, RUNTIME_UID
        tar.addfile(folder)
        for name, text in (("plan.json", plan), ("credentials.json", credentials or "{}")):
            data = text.encode()
            info = tarfile.TarInfo(f"hangar-fetch/{name}")
            info.size, info.mode, info.uid, info.gid = len(data), 0o400, RUNTIME_UID, RUNTIME_UID
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def _event(line: str) -> dict[str, Any] | None:
    """A JSON line of the fetch command, or None for anything else."""
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def _read_lines(stream: Iterator[bytes], lines: queue.Queue[str | None]) -> None:
    """Put the stream's lines on ``lines``, then None: at its end, or when the connection broke
    (the caller then judges the container's exit)."""
    try:
        for line in _lines(stream):
            lines.put(line)
    except Exception as exc:
        logging.getLogger(__name__).info("fetch log stream broke off: %s", type(exc).__name__)
    finally:
        lines.put(None)


def _take(
    event: dict[str, Any], on_progress: Callable[[int, int, float], None], heartbeat: Callable[[], None]
) -> dict[str, Any] | None:
    """Act on one event of the fetch; the event itself if it is the last word (done or error)."""
    kind = event["event"]
    if kind == "progress":
        on_progress(_count(event.get("bytes_done")), _count(event.get("bytes_total")), _count(event.get("rate")))
    elif kind == "verify":
        heartbeat()
    elif kind in ("done", "error"):
        return event
    return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _names(value: Any) -> tuple[str, ...]:
    return tuple(str(v)[:200] for v in value[:100]) if isinstance(value, list) else ()


class ModelVolumes:
    """The models fetched into volumes on one Docker host, for one Hangar instance."""

    def __init__(self, driver: DockerDriver) -> None:
        self.driver = driver

    @property
    def instance(self) -> str:
        return self.driver.instance

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return self.driver._call(func, *args, **kwargs)

    # ------------------------------------------------------------------ fetch

    def fetch(
        self,
        fetch: ModelFetch,
        *,
        on_progress: Callable[[int, int, float], None],
        heartbeat: Callable[[], None],
    ) -> FetchedModel:
        if not HASH.fullmatch(fetch.content_hash):
            raise PermanentDriverError("The model has no valid content hash; register it again.", reason="BadModel")
        image = self._fetch_image()
        total = sum(_count(e.get("size")) for e in json.loads(fetch.plan).get("manifest", []))
        volume = self._volume(fetch.content_hash, total)
        name = fetch_container_name(self.instance, fetch.content_hash)
        container = self._create(name, image, volume, fetch, on_progress, heartbeat)
        try:
            self._call(container.put_archive, INPUT_PARENT, _input_archive(fetch.plan, fetch.credentials))
            self._call(container.start)
            last = self._follow(container, on_progress, heartbeat)
            code = self._exit_code(container)
            if code == 0 and last is not None and last.get("event") == "done":
                if last.get("content_hash") != fetch.content_hash:
                    raise PermanentDriverError("The fetch reported another model than asked.", reason="FetchFailed")
                return FetchedModel(
                    volume=volume,
                    path=f"models/{fetch.content_hash}",
                    downloaded_bytes=_count(last.get("downloaded_bytes")),
                    fetched=_names(last.get("fetched")),
                    repaired=_names(last.get("repaired")),
                )
            raise self._failure(container, code, last)
        finally:
            with contextlib.suppress(docker.errors.NotFound, PermanentDriverError, TemporaryDriverError):
                self._call(container.remove, force=True)

    def _fetch_image(self) -> str:
        """The platform's runtime image, if it has the fetch command."""
        image = self.driver.image
        try:
            found = self._call(self.driver.client.images.get, image)
        except docker.errors.NotFound:
            raise PermanentDriverError(
                f"Runtime image {image} is not on {self.driver.where}; it also fetches models. "
                "Build it with `deploy/images/build` on that host.",
                reason="ImageMissing",
            ) from None
        if not (found.labels or {}).get(FETCH_LABEL):
            raise PermanentDriverError(
                f"Runtime image {image} on {self.driver.where} predates the model fetch command; "
                "rebuild it with `deploy/images/build`.",
                reason="ImageOutdated",
            )
        return image

    def _volume(self, content_hash: str, total: int) -> str:
        name = volume_name(self.instance, content_hash)
        labels = {
            LABEL_INSTANCE: self.instance,
            LABEL_ROLE: ROLE_MODEL,
            LABEL_MODEL_HASH: content_hash,
            LABEL_MODEL_BYTES: str(total),
        }
        try:
            volume = self._call(self.driver.client.volumes.get, name)
        except docker.errors.NotFound:
            # Two workers creating it at once both get it: Docker answers with the existing volume.
            volume = self._call(self.driver.client.volumes.create, name=name, driver="local", labels=labels)
        found = volume.attrs.get("Labels") or {}
        if found.get(LABEL_MODEL_HASH) != content_hash or found.get(LABEL_INSTANCE) != self.instance:
            raise PermanentDriverError(
                f"Volume {name} on {self.driver.where} was not made by this installation for this model; "
                "remove it, it is not used.",
                reason="VolumeConflict",
            )
        return name

    def _create(
        self,
        name: str,
        image: str,
        volume: str,
        fetch: ModelFetch,
        on_progress: Callable[[int, int, float], None],
        heartbeat: Callable[[], None],
    ) -> Any:
        """The fetch container (created, not started). Another fetch of the same model on this
        host (another worker, another deployment) is followed to its end first: the name refuses
        a second one, so two fetches never write one volume at once."""
        client = self.driver.client
        for _attempt in range(3):
            try:
                return self._call(
                    client.containers.create,
                    image,
                    entrypoint=["python", "-m", "workers.runtime.fetch"],
                    command=FETCH_COMMAND,
                    name=name,
                    labels={
                        LABEL_INSTANCE: self.instance,
                        LABEL_ROLE: ROLE_FETCH,
                        LABEL_MODEL_HASH: fetch.content_hash,
                    },
                    detach=True,
                    mounts=[Mount(target=CACHE_MOUNT, source=volume, type="volume", read_only=False)],
                    mem_limit=FETCH_MEMORY,
                    nano_cpus=int(1e9),
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                )
            except PermanentDriverError as exc:
                if "already in use by container" not in exc.detail and "HTTP 409" not in exc.message:
                    raise
            self._outwait(name, on_progress, heartbeat)
        raise TemporaryDriverError(
            f"Another fetch of this model keeps running on {self.driver.where}; retrying.", reason="FetchBusy"
        )

    def _outwait(
        self, name: str, on_progress: Callable[[int, int, float], None], heartbeat: Callable[[], None]
    ) -> None:
        """Follow someone else's fetch container ``name`` to its end (its owner removes it); one
        that had already ended when seen lost its owner, and is removed here."""
        try:
            other = self._call(self.driver.client.containers.get, name)
            if other.status in ("created", "running"):
                self._follow(other, on_progress, heartbeat)
                try:  # its owner removes it on reading its exit; not through _call: a timeout is an answer here
                    other.wait(condition="removed", timeout=OWNER_REMOVES_S)
                    return
                except (requests.exceptions.RequestException, docker.errors.APIError):
                    self._call(other.reload)
            if other.status in ("exited", "dead"):
                self._call(other.remove, force=True)
        except docker.errors.NotFound:
            return

    def _follow(
        self, container: Any, on_progress: Callable[[int, int, float], None], heartbeat: Callable[[], None]
    ) -> dict[str, Any] | None:
        """Read the fetch's JSON lines until it ends; the last ``done``/``error`` event.

        docker-py's log stream has no read timeout, so it is read on a thread and waited for
        here: a fetch silent for ``STALL_S`` (a daemon that vanished, a download that hangs) is
        killed and reported as temporary.
        """
        lines: queue.Queue[str | None] = queue.Queue()
        stream = self._call(container.logs, stream=True, follow=True, stdout=True, stderr=False)
        threading.Thread(target=_read_lines, args=(stream, lines), name="hangar-fetch-logs", daemon=True).start()
        last: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        try:
            while True:
                try:
                    line = lines.get(timeout=5.0)
                except queue.Empty:
                    if time.monotonic() - quiet_since > STALL_S:
                        self._stalled(container)
                    continue
                if line is None:
                    return last
                quiet_since = time.monotonic()
                event = _event(line)
                if event is not None:
                    last = _take(event, on_progress, heartbeat) or last
        finally:
            with contextlib.suppress(Exception):
                stream.close()

    def _stalled(self, container: Any) -> NoReturn:
        with contextlib.suppress(Exception):
            self._call(container.kill)
        raise TemporaryDriverError(
            f"Fetching the model on {self.driver.where} stalled for {STALL_S:g} s; retrying.",
            reason="SourceUnreachable",
        )

    def _exit_code(self, container: Any) -> int:
        try:
            status = self._call(container.wait, timeout=60)
        except docker.errors.NotFound:
            raise TemporaryDriverError(
                f"The model fetch container on {self.driver.where} vanished before it ended; retrying.",
                reason="FetchInterrupted",
            ) from None
        code = status.get("StatusCode") if isinstance(status, dict) else None
        return code if isinstance(code, int) else -1

    def _failure(self, container: Any, code: int, last: dict[str, Any] | None) -> Exception:
        """The error for a fetch that did not end with ``done``: its own reason and message when it
        said them (written for the tenant by the fetch command), else what the exit says."""
        if last is not None and last.get("event") == "error":
            reason = str(last.get("reason", ""))
            reason = reason if REASON.fullmatch(reason) else "FetchFailed"
            message = "".join(c for c in str(last.get("message", "")) if c.isprintable())[:MAX_MESSAGE]
            error = TemporaryDriverError if reason in TEMPORARY_REASONS else PermanentDriverError
            return error(message or "The fetch failed.", reason=reason)
        stderr = ""
        with contextlib.suppress(Exception):
            stderr = bytes(self._call(container.logs, stdout=False, stderr=True, tail=20)).decode(errors="replace")
        logging.getLogger(__name__).info("fetch container on %s exited %s: %.1000s", self.driver.url, code, stderr)
        if "No module named workers.runtime.fetch" in stderr:
            return PermanentDriverError(
                f"Runtime image {self.driver.image} on {self.driver.where} has no model fetch command; "
                "rebuild it with `deploy/images/build`.",
                reason="ImageOutdated",
            )
        oom = bool(container.attrs.get("State", {}).get("OOMKilled")) if self._reloaded(container) else False
        return PermanentDriverError(
            f"The model fetch on {self.driver.where} ended with exit code {code}"
            f"{' (out of memory)' if oom else ''} without a result.",
            reason="FetchFailed",
        )

    def _reloaded(self, container: Any) -> bool:
        try:
            self._call(container.reload)
        except (docker.errors.NotFound, PermanentDriverError, TemporaryDriverError):
            return False
        return True

    # ------------------------------------------------------------------ eviction

    def volumes(self) -> list[Any]:
        """This instance's model volumes on the host."""
        filters = {"label": [f"{LABEL_INSTANCE}={self.instance}", f"{LABEL_ROLE}={ROLE_MODEL}"]}
        return list(self._call(self.driver.client.volumes.list, filters=filters))

    def evict(self, *, limit_bytes: int, keep: str, last_used: Mapping[str, float]) -> list[str]:
        """Remove unused model volumes, least recently used first (``last_used``: content hash ->
        timestamp; unknown: oldest), until the rest fit ``limit_bytes``. The evicted hashes."""
        found = []
        for volume in self.volumes():
            labels = volume.attrs.get("Labels") or {}
            content_hash = labels.get(LABEL_MODEL_HASH, "")
            size = labels.get(LABEL_MODEL_BYTES, "")
            if HASH.fullmatch(content_hash) and size.isascii() and size.isdigit():
                found.append((last_used.get(content_hash, 0.0), content_hash, int(size), volume))
        total = sum(size for _, _, size, _ in found)
        evicted: list[str] = []
        for _, content_hash, size, volume in sorted(found, key=lambda f: (f[0], f[1])):
            if total <= limit_bytes:
                break
            if content_hash == keep or self._in_use(volume.name):
                continue
            try:
                self._call(volume.remove)
            except docker.errors.NotFound:
                pass
            except PermanentDriverError:  # 409: a container took it meanwhile; Docker keeps it
                continue
            total -= size
            evicted.append(content_hash)
        return evicted

    def _in_use(self, name: str) -> bool:
        return bool(self._call(self.driver.client.containers.list, all=True, filters={"volume": name}, sparse=True))
