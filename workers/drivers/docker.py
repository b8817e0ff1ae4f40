"""Docker driver: one container per replica on a Docker host, through the docker SDK.

Containers run ``settings.HANGAR_RUNTIME_IMAGE`` (built locally by ``deploy/images/build``; no
registry is reachable, so a missing image is never pulled but reported with the command that
builds it), mount the model read-only at ``/model``, publish port 8000 on a random (or the
deployment's fixed) host port, carry the ``hangar.*`` labels, get CPU/memory limits and, with
``gpus > 0``, an NVIDIA device request. No restart policy: the reconciler decides what to
replace, so a dead container shows up as such instead of restarting behind our back.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

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
    Driver,
    ObservedReplica,
    PermanentDriverError,
    ReplicaSpec,
    TemporaryDriverError,
)
from workers.runtime.auth import TOKEN_ENV

CONTAINER_PORT = "8000/tcp"
MODEL_MOUNT = "/model"
API_TIMEOUT_S = 30
STOP_TIMEOUT_S = 10
BUILD_HINT = "build it on the Docker host with `deploy/images/build` (images are built locally, never pulled)"

_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)


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

    def __init__(self, *, url: str, image: str, instance: str) -> None:
        self.url = url or "unix:///var/run/docker.sock"
        self.image = image
        self.instance = instance
        self._client: docker.DockerClient | None = None
        parsed = urlparse(self.url)
        self.is_local = parsed.scheme in ("unix", "npipe") or parsed.hostname in ("127.0.0.1", "localhost")
        # Where the gateway reaches published ports: loopback for a local daemon, else the host.
        self.public_host = "127.0.0.1" if self.is_local else (parsed.hostname or "127.0.0.1")
        self.bind_host = "127.0.0.1" if self.is_local else "0.0.0.0"

    # ------------------------------------------------------------------ connection

    def _unreachable(self, exc: BaseException) -> TemporaryDriverError:
        return TemporaryDriverError(
            f"Docker daemon at {self.url} is unreachable: {exc}".strip()[:900], reason="DaemonUnreachable"
        )

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.DockerClient(
                    base_url=self.url,
                    version="auto",
                    timeout=API_TIMEOUT_S,
                    use_ssh_client=self.url.startswith("ssh://"),
                )
            except docker.errors.DockerException as exc:
                raise self._unreachable(exc) from None
            except _NETWORK_ERRORS as exc:
                raise self._unreachable(exc) from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK call, turning transport failures and 5xx into temporary errors."""
        try:
            return func(*args, **kwargs)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            if exc.is_server_error():
                raise TemporaryDriverError(f"Docker daemon at {self.url} failed: {exc.explanation or exc}") from None
            raise PermanentDriverError(f"Docker refused the request: {exc.explanation or exc}") from None
        except _NETWORK_ERRORS as exc:
            self.close()
            raise self._unreachable(exc) from None
        except docker.errors.DockerException as exc:
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
        bindings = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(CONTAINER_PORT) or []
        if bindings:
            endpoint = f"http://{self.public_host}:{bindings[0]['HostPort']}"
        detail = ""
        if backend_state == BackendState.EXITED:
            detail = "OOMKilled" if state.get("OOMKilled") else (state.get("Error") or "")
        return ObservedReplica(
            name=labels.get(LABEL_REPLICA, container.name),
            backend_id=container.id,
            deployment_id=int(labels.get(LABEL_DEPLOYMENT, 0)),
            generation=int(labels.get(LABEL_GENERATION, 0)),
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
        containers = self._call(self.client.containers.list, all=True, filters={"label": filters})
        return [self._observe(c) for c in containers]

    def container_name(self, spec: ReplicaSpec) -> str:
        return f"hangar-{self.instance}-{spec.deployment_id}-{spec.name}"[:250]

    def create(self, spec: ReplicaSpec) -> ObservedReplica:
        try:
            self._call(self.client.images.get, self.image)
        except docker.errors.NotFound:
            raise PermanentDriverError(
                f"Runtime image {self.image} is not on the Docker host at {self.url}; {BUILD_HINT}.",
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
        try:
            container = self._call(
                self.client.containers.create,
                self.image,
                command=spec.runtime_args(model=MODEL_MOUNT, host="0.0.0.0", port=8000),
                name=name,
                labels=spec.labels | {LABEL_INSTANCE: self.instance},
                detach=True,
                ports={CONTAINER_PORT: (self.bind_host, port)},
                mounts=[Mount(target=MODEL_MOUNT, source=spec.model_path, type="bind", read_only=True)],
                nano_cpus=int(spec.cpus * 1e9),
                mem_limit=f"{spec.memory_mb}m",
                device_requests=device_requests or None,
                # Only what the runtime needs; the image sets the rest (offline mode, PATH). The
                # token is visible to whoever may inspect containers on this daemon: the platform.
                environment={"HANGAR_RUNTIME_PORT": "8000"} | ({TOKEN_ENV: spec.token} if spec.token else {}),
            )
        except PermanentDriverError as exc:
            if "Conflict" in exc.message or "already in use by container" in exc.message:
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
        text = str(exc)
        lowered = text.lower()
        if "bind source path does not exist" in lowered or (
            "no such file or directory" in lowered and "mount" in lowered
        ):
            return PermanentDriverError(
                f"Model path {spec.model_path} does not exist on the Docker host at {self.url}; "
                "fix the catalog entry's source (it must be a directory on that host).",
                reason="ModelPathMissing",
            )
        if "port is already allocated" in lowered or "address already in use" in lowered:
            return PermanentDriverError(
                f"Host port {port} is already in use on the Docker host at {self.url}; choose another "
                "host_port or leave it empty to use any free port.",
                reason="PortClash",
            )
        if "could not select device driver" in lowered:
            return PermanentDriverError(
                f"The Docker host at {self.url} cannot give containers GPUs (no NVIDIA container runtime); "
                "install the NVIDIA Container Toolkit or set gpus to 0.",
                reason="GPUUnavailable",
            )
        return exc

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
            if "already in progress" in exc.message:  # another worker is removing it
                return
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
            self._call(self.client.ping)
            version = self._call(self.client.version)
            info = self._call(self.client.info)
        except TemporaryDriverError as exc:
            return {"reachable": False, "version": "", "gpus": 0, "error": exc.message}
        except PermanentDriverError as exc:
            return {"reachable": False, "version": "", "gpus": 0, "error": exc.message}
        runtimes = info.get("Runtimes") or {}
        nvidia = "nvidia" in runtimes or "nvidia" in str(info.get("DefaultRuntime", ""))
        try:
            self._call(self.client.images.get, self.image)
            image_present = True
        except (docker.errors.NotFound, PermanentDriverError):
            image_present = False
        return {
            "reachable": True,
            "version": version.get("Version", ""),
            "api_version": version.get("ApiVersion", ""),
            "gpus": len(info.get("GenericResources") or []) if nvidia else 0,
            "nvidia_runtime": nvidia,
            "cpus": info.get("NCPU", 0),
            "memory_bytes": info.get("MemTotal", 0),
            "runtime_image": self.image,
            "runtime_image_present": image_present,
            "error": "" if image_present else f"Runtime image {self.image} missing; {BUILD_HINT}.",
        }
