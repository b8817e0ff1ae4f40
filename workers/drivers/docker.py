"""Docker driver: one container per replica on a Docker host, through the docker SDK.

Containers run ``settings.HANGAR_RUNTIME_IMAGE`` (built locally by ``deploy/images/build``; no
registry is reachable, so a missing image is never pulled but reported with the command that
builds it), mount the model read-only at ``/model`` (the node's directory, or the model's volume
when a fetch on the host filled it: ``docker_models``), publish port 8000 on a random (or the
deployment's fixed) host port, carry the ``hangar.*`` labels, get CPU/memory limits and, with
``gpus > 0``, an NVIDIA device request. No restart policy: the reconciler decides what to
replace, so a dead container shows up as such instead of restarting behind our back.

Which daemons the worker talks to, and how, is ``docker_connection``'s business. Ports are
published on the target's ``publish_host`` only (127.0.0.1 unless the platform says otherwise),
and the gateway reaches a replica at ``http://<publish_host>:<HostPort>`` with the port checked
to be a number in range. Messages name the target, never its URL, and never quote the daemon.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions
from docker.types import DeviceRequest, Mount

from workers.drivers.base import (
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_INSTANCE,
    LABEL_REPLICA,
    BackendState,
    ContentHashes,
    Driver,
    FetchedModel,
    ModelFetch,
    ObservedReplica,
    PermanentDriverError,
    ReplicaSpec,
    TemporaryDriverError,
)
from workers.drivers.docker_connection import (
    SSH_ERRORS,
    DockerConnection,
    classify_ssh,
    refuse,
    url_host,
    valid_host,
)
from workers.drivers.docker_models import ModelVolumes
from workers.drivers.health import Reason, causes, classify_network, number, report, version_text
from workers.drivers.images import RuntimeImages
from workers.runtime.auth import TOKEN_ENV

CONTAINER_PORT = "8000/tcp"
MODEL_MOUNT = "/model"
API_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
BUILD_HINT = "build it on the Docker host with `deploy/images/build` (images are built locally, never pulled)"

_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)
_PORT = re.compile(r"[0-9]{1,5}")

if TYPE_CHECKING:
    from controlplane.deployments.models import Target

logger = logging.getLogger(__name__)


def host_port(value: Any) -> int | None:
    """A daemon-reported ``HostPort`` as a port number, or ``None`` unless it is one (1-65535)."""
    if not isinstance(value, str) or not _PORT.fullmatch(value):
        return None
    port = int(value)
    return port if 1 <= port <= 65535 else None


def _label_int(labels: dict[str, str], key: str) -> int:
    value = labels.get(key, "")
    return int(value) if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value) else 0


def daemon_reason(exc: BaseException) -> str:
    """The fixed reason for a failure to talk to a daemon (see ``workers.drivers.health``)."""
    for current in causes(exc):  # an answer with a status: checked first, it is an OSError too
        if isinstance(current, docker.errors.APIError):
            code = current.status_code or 0
            if code >= 500:
                return Reason.SERVER_ERROR
            return Reason.ACCESS_DENIED if code in (401, 403) else Reason.NOT_DOCKER
    found = classify_ssh(exc) or classify_network(exc)
    if found:
        return found
    for current in causes(exc):  # an answer that is not the Docker API's (no JSON, no ApiVersion)
        if isinstance(current, ValueError | KeyError | TypeError | docker.errors.DockerException):
            return Reason.NOT_DOCKER
    return Reason.UNEXPECTED


def _parse_time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; fromisoformat takes at most microseconds.
    head, _, frac = value.rstrip("Z").partition(".")
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]}+00:00")
    return None


class DockerDriver(Driver):
    kind = "docker"

    def __init__(
        self,
        *,
        url: str,
        image: str,
        instance: str,
        credentials: dict[str, str] | None = None,
        publish_host: str = "127.0.0.1",
        name: str = "",
        cuda_image: str = "",
    ) -> None:
        """Refuses (``PermanentDriverError``, no network call) what ``DockerConnection`` refuses
        and a ``publish_host`` that is not an IP address or a DNS name."""
        self.connection = DockerConnection.checked(url, credentials)
        self.url = self.connection.url
        self.image = image
        self.images = RuntimeImages(cpu=image, cuda=cuda_image)  # GPU replicas run the CUDA image
        self.instance = instance
        self.where = f"the Docker host of target {name!r}" if name else "the Docker host"
        self._client: docker.DockerClient | None = None
        # Where containers publish their port and where the gateway calls them: the same address.
        self.public_host = publish_host or "127.0.0.1"
        if not valid_host(self.public_host):
            raise refuse(Reason.BAD_PUBLISH_HOST)

    @classmethod
    def for_target(
        cls, target: Target, *, image: str, instance: str, credentials: dict[str, str], cuda_image: str = ""
    ) -> DockerDriver:
        return cls(
            url=target.docker_url,
            image=image,
            cuda_image=cuda_image,
            instance=instance,
            credentials=credentials,
            publish_host=target.publish_host,
            name=target.name,
        )

    # ------------------------------------------------------------------ connection

    def _unreachable(self, exc: BaseException) -> TemporaryDriverError:
        reason = daemon_reason(exc)
        logger.info("Docker daemon %s: %s: %.300s", self.url, reason, exc)
        return TemporaryDriverError(
            f"The Docker daemon of {self.where} is unreachable ({reason}).", reason="DaemonUnreachable", cause=reason
        )

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = self.connection.open(timeout=API_TIMEOUT_S)
            except PermanentDriverError:
                self.connection.close()
                raise
            except Exception as exc:  # transport, TLS, SSH, or an answer that is not Docker's
                self.connection.close()
                raise self._unreachable(exc) from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        self.connection.close()

    def bind_address(self) -> str:
        """The host IP to publish on: ``publish_host`` itself, or what its name resolves to."""
        try:
            return str(ipaddress.ip_address(self.public_host))
        except ValueError:
            pass
        try:
            return str(socket.getaddrinfo(self.public_host, None, type=socket.SOCK_STREAM)[0][4][0])
        except (OSError, IndexError):
            raise TemporaryDriverError(
                f"The publish host of {self.where} does not resolve.",
                reason="PublishHostUnresolved",
                cause=Reason.HOST_NOT_FOUND,
            ) from None

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK call, turning transport failures and 5xx into temporary errors."""
        try:
            return func(*args, **kwargs)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            # The daemon's words go to the worker's log and to _explain's matching, not further.
            said = str(exc.explanation or "")[:2000]
            code = exc.status_code or 0
            logger.info("Docker daemon %s answered %s: %.300s", self.url, code, said)
            if exc.is_server_error():
                raise TemporaryDriverError(
                    f"The Docker daemon of {self.where} failed (HTTP {code}).", cause=Reason.SERVER_ERROR, detail=said
                ) from None
            raise PermanentDriverError(
                f"The Docker daemon of {self.where} refused the request (HTTP {code}).",
                cause=daemon_reason(exc),
                detail=said,
            ) from None
        except (*_NETWORK_ERRORS, *SSH_ERRORS, docker.errors.DockerException, ValueError, KeyError) as exc:
            # ValueError/KeyError: an answer docker-py could not read (not JSON, fields missing).
            self.close()
            raise self._unreachable(exc) from None

    # ------------------------------------------------------------------ interface

    def _observe(self, container: Any) -> ObservedReplica:
        labels = container.labels or {}
        state = container.attrs.get("State", {})
        status = state.get("Status", container.status)
        # create() starts the container at once, so one still "created" lost its worker in
        # between: report it as exited (removed and replaced), not as a replica to wait for.
        never_started = status == "created"
        running = status in ("running", "paused", "restarting")
        backend_state = BackendState.RUNNING if running else BackendState.EXITED
        endpoint = ""
        detail = ""
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(CONTAINER_PORT) or []
        if bindings:
            port = host_port(bindings[0].get("HostPort") if isinstance(bindings[0], dict) else None)
            if port is None:
                detail = "the daemon reported no valid host port (an integer 1-65535); no endpoint"
            else:
                endpoint = f"http://{url_host(self.public_host)}:{port}"
        if backend_state == BackendState.EXITED:
            detail = "OOMKilled" if state.get("OOMKilled") else str(state.get("Error") or "")[:200]
        return ObservedReplica(
            name=labels.get(LABEL_REPLICA, container.name),
            backend_id=container.id,
            deployment_id=_label_int(labels, LABEL_DEPLOYMENT),
            generation=_label_int(labels, LABEL_GENERATION),
            state=backend_state,
            endpoint=endpoint,
            started_at=_parse_time(state.get("StartedAt")),
            exit_code=state.get("ExitCode") if backend_state == BackendState.EXITED and not never_started else None,
            detail="never started" if never_started else detail,
            labels=dict(labels),
            never_started=never_started,
        )

    def list(self, deployment_id: int | None = None) -> list[ObservedReplica]:
        filters = [f"{LABEL_INSTANCE}={self.instance}"]
        filters.append(f"{LABEL_DEPLOYMENT}={deployment_id}" if deployment_id is not None else LABEL_DEPLOYMENT)
        # ignore_removed: a container another worker removes between the listing and its
        # inspection is gone, which is what this pass would learn next time anyway.
        containers = self._call(self.client.containers.list, all=True, filters={"label": filters}, ignore_removed=True)
        return [self._observe(c) for c in containers]

    def container_name(self, spec: ReplicaSpec) -> str:
        return f"hangar-{self.instance}-{spec.deployment_id}-{spec.name}"[:250]

    def create(self, spec: ReplicaSpec) -> ObservedReplica:
        image = self.images.for_replica(spec)
        try:
            self._call(self.client.images.get, image)
        except docker.errors.NotFound:
            raise PermanentDriverError(
                f"Runtime image {image} is not on {self.where}; {BUILD_HINT}.",
                reason="ImageMissing",
            ) from None
        device_requests = []
        if spec.gpus:
            if spec.gpu_ids:
                device_requests.append(DeviceRequest(device_ids=list(spec.gpu_ids), capabilities=[["gpu"]]))
            else:
                device_requests.append(DeviceRequest(count=spec.gpus, capabilities=[["gpu"]]))
        port = (spec.host_port + spec.slot) if spec.host_port else None
        name = self.container_name(spec)
        if spec.model_volume:  # fetched on this host: the model's volume, the model at its path inside
            mount = Mount(target=MODEL_MOUNT, source=spec.model_volume, type="volume", read_only=True)
            model = f"{MODEL_MOUNT}/{spec.model_path}"
        else:
            mount = Mount(target=MODEL_MOUNT, source=spec.model_path, type="bind", read_only=True)
            model = MODEL_MOUNT
        try:
            container = self._call(
                self.client.containers.create,
                image,
                command=spec.runtime_args(model=model, host="0.0.0.0", port=8000),
                name=name,
                labels=spec.labels | {LABEL_INSTANCE: self.instance},
                detach=True,
                ports={CONTAINER_PORT: (self.bind_address(), port)},
                mounts=[mount],
                nano_cpus=int(spec.cpus * 1e9),
                mem_limit=f"{spec.memory_mb}m",
                device_requests=device_requests or None,
                # Only what the runtime needs; the image sets the rest (offline mode, PATH). The
                # token is visible to whoever may inspect containers on this daemon: the platform.
                environment={"HANGAR_RUNTIME_PORT": "8000"} | ({TOKEN_ENV: spec.token} if spec.token else {}),
            )
        except PermanentDriverError as exc:
            if "already in use by container" in exc.detail or "HTTP 409" in exc.message:
                # Another worker created this very replica a moment ago: adopt it.
                return self._observe(self._call(self.client.containers.get, name))
            raise self._explain(exc, spec) from None
        try:
            self._call(container.start)
        except (PermanentDriverError, TemporaryDriverError) as exc:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise self._explain(exc, spec, port=port) from None
        self._call(container.reload)
        return self._observe(container)

    def _explain(self, exc: Exception, spec: ReplicaSpec, port: int | None = None) -> Exception:
        """Rewrite the daemon's wording into what the operator should do."""
        lowered = getattr(exc, "detail", "").lower()
        if "bind source path does not exist" in lowered or (
            "no such file or directory" in lowered and "mount" in lowered
        ):
            return PermanentDriverError(
                f"Model path {spec.model_path} does not exist on {self.where}; "
                "fix the catalog entry's source (it must be a directory on that host).",
                reason="ModelPathMissing",
            )
        if "port is already allocated" in lowered or "address already in use" in lowered:
            return PermanentDriverError(
                f"Host port {port} is already in use on {self.where}; choose another "
                "host_port or leave it empty to use any free port.",
                reason="PortClash",
            )
        if "could not select device driver" in lowered:
            return PermanentDriverError(
                f"There is no NVIDIA container runtime on {self.where}, so containers cannot get GPUs; "
                "install the NVIDIA Container Toolkit or set gpus to 0.",
                reason="GPUUnavailable",
            )
        return exc

    def fetch_model(
        self,
        fetch: ModelFetch,
        *,
        on_progress: Callable[[int, int, float], None],
        heartbeat: Callable[[], None],
    ) -> FetchedModel:
        """Fetch into the model's volume on this host, by a container of the runtime image
        (``workers.drivers.docker_models``)."""
        return ModelVolumes(self).fetch(fetch, on_progress=on_progress, heartbeat=heartbeat)

    def evict_models(self, *, limit_bytes: int, keep: str, last_used: Mapping[str, float]) -> ContentHashes:
        """Remove this instance's unused model volumes beyond ``limit_bytes``, least recently used first."""
        return ModelVolumes(self).evict(limit_bytes=limit_bytes, keep=keep, last_used=last_used)

    def remove(self, backend_id: str) -> None:
        try:
            container = self._call(self.client.containers.get, backend_id)
        except docker.errors.NotFound:
            return
        try:
            if container.status == "running":
                self._call(container.stop, timeout=STOP_TIMEOUT_S)
            self._call(container.remove, force=True)
        except docker.errors.NotFound:
            return
        except PermanentDriverError as exc:
            if "already in progress" in exc.detail:  # another worker is removing it
                return
            raise

    def terminate(self, backend_id: str) -> None:
        """SIGTERM to the container's main process: it drains, then exits (``remove`` does the rest)."""
        try:
            container = self._call(self.client.containers.get, backend_id)
            if container.status == "running":
                self._call(container.kill, signal="SIGTERM")
        except docker.errors.NotFound:
            return
        except PermanentDriverError as exc:
            if "is not running" not in exc.detail:  # it exited meanwhile: what we asked for
                raise

    def logs(self, backend_id: str, tail: int = 200) -> str:
        try:
            container = self._call(self.client.containers.get, backend_id)
            data = self._call(container.logs, tail=tail, stdout=True, stderr=True)
        except docker.errors.NotFound:
            return ""
        return bytes(data).decode(errors="replace")

    def check(self) -> dict[str, Any]:
        try:
            if self._call(self.client.ping) is not True:  # "OK" is the whole answer of a daemon
                return report(Reason.NOT_DOCKER)
            version = self._call(self.client.version)
            info = self._call(self.client.info)
        except (TemporaryDriverError, PermanentDriverError) as exc:
            return report(exc.cause or Reason.UNEXPECTED)
        except Exception as exc:  # whatever else an answer made docker-py do: reported, not raised
            logger.info("Docker daemon %s: unreadable answer: %.300s", self.url, exc)
            return report(daemon_reason(exc))
        if not isinstance(version, dict) or not isinstance(info, dict):
            return report(Reason.NOT_DOCKER)
        runtimes = info.get("Runtimes") or {}
        nvidia = "nvidia" in runtimes or "nvidia" in str(info.get("DefaultRuntime", ""))
        try:
            self._call(self.client.images.get, self.image)
            image_present = True
        except (docker.errors.NotFound, PermanentDriverError):
            image_present = False
        generic = info.get("GenericResources")
        return report(
            version=version_text(version.get("Version")),
            api_version=version_text(version.get("ApiVersion")),
            gpus=len(generic) if nvidia and isinstance(generic, list) else 0,
            nvidia_runtime=nvidia,
            cpus=number(info.get("NCPU")),
            memory_bytes=number(info.get("MemTotal")),
            runtime_image=self.image,
            runtime_image_present=image_present,
            error="" if image_present else f"Runtime image {self.image} missing; {BUILD_HINT}.",
        )
