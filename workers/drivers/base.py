"""The interface every backend driver implements, and the values that cross it.

A driver knows nothing about the database: the reconciler hands it a ``ReplicaSpec`` built from
the deployment row and gets back ``ObservedReplica`` values read from the backend by labels.
Errors are either ``TemporaryDriverError`` (retry with backoff: daemon unreachable, API
timeout) or ``PermanentDriverError`` (surface and stop: image missing, port clash, model path
missing), each with a message written for the operator who reads it on the dashboard.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from controlplane.deployments.spec import runtime_flags

# Labels every backend resource carries; they point back to the owner.
LABEL_INSTANCE = "hangar.instance"
LABEL_DEPLOYMENT = "hangar.deployment"
LABEL_GENERATION = "hangar.generation"
LABEL_REPLICA = "hangar.replica"
LABEL_TENANT = "hangar.tenant"

STAGE_LINE = re.compile(r"hangar-runtime: stage=(?P<stage>[a-z_]+)(?P<rest>.*)")
HEALTH_TIMEOUT_S = 2.0

# Content hashes of models (what eviction returns; ``list`` is a driver method's name in the class).
ContentHashes = list[str]
# (uid, type, reason, message) of a backend's own events (Kubernetes), for the timeline.
BackendEvents = list[tuple[str, str, str, str]]


class DriverError(Exception):
    """Base class; ``reason`` is a short CamelCase word for conditions and events.

    ``message`` reaches deployments' events and the dashboard, so it is written here and never
    quotes the backend's answer. ``cause`` is the fixed reason of ``workers.drivers.health`` (what
    a target's health check reports); ``detail`` keeps the backend's own words for matching and
    for the worker's log only.
    """

    reason = "DriverError"

    def __init__(self, message: str, *, reason: str | None = None, cause: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause
        self.detail = detail
        if reason:
            self.reason = reason


class TemporaryDriverError(DriverError):
    """The backend may answer later (unreachable, timeout, 5xx): retry with backoff."""

    reason = "BackendUnavailable"


class PermanentDriverError(DriverError):
    """Retrying the same spec will fail the same way: phase Failed with this message."""

    reason = "DeployFailed"


@dataclass(frozen=True)
class ModelFetch:
    """A remote model a node fetches before its replicas start (``workers.runtime.fetch``).

    ``plan`` and ``credentials`` are JSON texts (``controlplane.catalog.store.connect.model_fetch_plan``);
    the credentials reach the fetch as a file (a Docker archive put into the container, a
    Kubernetes Secret), never in a command line, a label or a log.
    """

    content_hash: str
    plan: str
    credentials: str = field(default="", repr=False)
    cache_limit_bytes: int = 0  # the node cache's size limit (0: the fetch evicts nothing)


@dataclass(frozen=True)
class FetchedModel:
    """What a fetch on the node did: the volume holding the model and the model's path in it."""

    volume: str
    path: str  # relative to the volume's root: models/<content hash>
    downloaded_bytes: int = 0
    fetched: tuple[str, ...] = ()
    repaired: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a driver needs to start one replica; built from the deployment row.

    The spec attributes (``served_model_name`` to ``tolerations``) are the declared spec fields a
    replica sees (``controlplane.deployments.spec.REPLICA_SPEC_FIELDS``), under the same names;
    the ones with a runtime flag become ``runtime_args``.
    """

    instance: str
    tenant_id: int
    deployment_id: int
    deployment_name: str
    name: str  # unique within the deployment, e.g. "chat-g3-0"
    slot: int
    generation: int  # the deployment's template_generation
    # Where the node holds the model: a directory (a file source, the worker's own cache), or,
    # with ``model_volume``, the path inside that Docker volume (a fetch on the daemon filled it).
    model_path: str
    served_model_name: str
    dtype: str = "float32"
    quantization: str = "none"
    max_batch_size: int = 32
    max_model_len: int = 2048
    gpus: int = 0
    gpu_ids: tuple[str, ...] = ()
    cpus: float = 1.0
    memory_mb: int = 2048
    host_port: int | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    allow_unsafe_weights: bool = False
    trust_remote_code: bool = False
    task: str = "generate"  # the catalog model's task: "embed" serves /v1/embeddings
    pooling: str = ""  # embedding models: mean, last or cls
    # The bearer credential the replica requires (``controlplane.deployments.replica_auth``),
    # set by the reconciler; each driver hands it over its own way, never in the command line.
    token: str = field(default="", repr=False)
    # Fault-injection flags (tests only; ``workers.rollout_strategy.fault_flags``), already checked.
    faults: tuple[str, ...] = ()
    model_volume: str = ""  # Docker: the named volume the model was fetched into (mounted read-only)
    model_fetch: ModelFetch | None = None  # Kubernetes: fetched by an init container in each pod

    @property
    def labels(self) -> dict[str, str]:
        return {
            LABEL_INSTANCE: self.instance,
            LABEL_TENANT: str(self.tenant_id),
            LABEL_DEPLOYMENT: str(self.deployment_id),
            LABEL_GENERATION: str(self.generation),
            LABEL_REPLICA: self.name,
        }

    def runtime_args(self, *, model: str, host: str, port: int) -> list[str]:
        """Arguments of ``python -m workers.runtime`` for this replica."""
        args = ["--model", model, "--host", host, "--port", str(port), *runtime_flags(self)]
        if self.allow_unsafe_weights:
            args.append("--allow-unsafe-weights")
        if self.trust_remote_code:
            args.append("--trust-remote-code")
        if self.task != "generate":
            args += ["--task", self.task]
            if self.pooling:
                args += ["--pooling", self.pooling]
        return [*args, *self.faults]


class BackendState:
    """What the backend says about a replica's process/container/pod (not its /health)."""

    RUNNING = "running"
    STARTING = "starting"  # created, not yet running (pulling, pending)
    EXITED = "exited"  # stopped on its own: crashed, OOM-killed, killed from outside


@dataclass
class ObservedReplica:
    """One replica as the backend reports it, identified by its labels."""

    name: str
    backend_id: str
    deployment_id: int
    generation: int
    state: str  # BackendState
    endpoint: str = ""
    started_at: datetime | None = None
    exit_code: int | None = None
    detail: str = ""  # e.g. "OOMKilled", last log line
    ready: bool | None = None  # backends with their own readiness (Kubernetes) fill this in
    never_started: bool = False  # created, but its creator died before starting it: not a crash
    restarts: int = 0  # times the backend restarted it in place (Kubernetes containers)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state in (BackendState.RUNNING, BackendState.STARTING)


@dataclass(frozen=True)
class Stage:
    """The last progress line a replica printed (``hangar-runtime: stage=...``)."""

    step: str
    detail: str = ""


def last_stage(text: str) -> Stage | None:
    """The last ``stage=`` line in a log tail, or ``None``."""
    found: Stage | None = None
    for line in text.splitlines():
        match = STAGE_LINE.search(line)
        if match:
            found = Stage(step=match.group("stage"), detail=match.group("rest").strip())
    return found


def health_ok(endpoint: str, *, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """GET ``<endpoint>/health``: True only for 200 (503 while loading or draining)."""
    if not endpoint:
        return False
    try:
        response = httpx.get(f"{endpoint.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


class Driver(abc.ABC):
    """One backend (a local machine, a Docker host, a Kubernetes namespace)."""

    kind = "abstract"

    @abc.abstractmethod
    def list(self, deployment_id: int | None = None) -> list[ObservedReplica]:
        """Replicas of one deployment (or every Hangar replica of this instance), by labels."""

    @abc.abstractmethod
    def create(self, spec: ReplicaSpec) -> ObservedReplica:
        """Start one replica; return at once (readiness is polled with ``health``)."""

    @abc.abstractmethod
    def remove(self, backend_id: str) -> None:
        """Stop and delete one replica; removing something already gone is not an error."""

    @abc.abstractmethod
    def logs(self, backend_id: str, tail: int = 200) -> str:
        """The last ``tail`` lines of a replica's output."""

    def terminate(self, backend_id: str) -> None:  # noqa: B027 - optional hook
        """Ask a replica to stop gracefully (SIGTERM: it finishes its requests, then exits);
        return at once. ``remove`` later stops whatever is left. Default: nothing (``remove`` does it all)."""

    def health(self, endpoint: str) -> bool:
        return health_ok(endpoint)

    def stage(self, backend_id: str) -> Stage | None:
        """Startup progress of a replica, parsed from its log."""
        try:
            return last_stage(self.logs(backend_id, tail=50))
        except DriverError:
            return None

    def fetch_model(
        self,
        fetch: ModelFetch,
        *,
        on_progress: Callable[[int, int, float], None],
        heartbeat: Callable[[], None],
    ) -> FetchedModel:
        """Fetch a remote model on the backend's side, verified (Docker: into a volume, by a
        short-lived container); ``on_progress`` follows the download, ``heartbeat`` is called
        while it works. Backends that cannot refuse."""
        raise PermanentDriverError(
            f"The {self.kind} backend cannot fetch models for its replicas.", reason="ModelSourceUnsupported"
        )

    def evict_models(self, *, limit_bytes: int, keep: str, last_used: Mapping[str, float]) -> ContentHashes:
        """Remove models ``fetch_model`` left on the backend beyond ``limit_bytes`` (unused ones,
        least recently used first, never ``keep``); their content hashes. Default: none."""
        return []

    def check(self) -> dict[str, Any]:
        """Target health (``workers.drivers.health.report``): reachable, status, fixed reason,
        version and capacity; backend errors are reported, not raised."""
        return {"reachable": True, "status": "ok", "reason": "", "version": "", "gpus": 0, "error": ""}

    # Backends with their own controller (Kubernetes) get the whole spec and replica count via
    # ``apply`` and roll replicas themselves; the reconciler then only observes and reports.
    group_managed = False

    def apply(self, spec: ReplicaSpec, replicas: int) -> None:
        raise NotImplementedError

    def teardown(self, deployment_id: int) -> None:  # noqa: B027 - optional hook
        """Remove group-level resources (Kubernetes Deployment + Service) of a deployment."""

    def backend_events(self, deployment_id: int, since: datetime | None = None) -> BackendEvents:
        """Backend events newer than ``since`` as (uid, type, reason, message); Kubernetes only."""
        return []

    def known_deployment_ids(self) -> set[int]:
        """Ids of every deployment with resources on this backend (for orphan collection)."""
        return {r.deployment_id for r in self.list(None)}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
