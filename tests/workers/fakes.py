"""An in-memory driver for reconciler tests: records calls, lets tests flip health and kill replicas."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from workers.drivers.base import (
    BackendState,
    Driver,
    ObservedReplica,
    PermanentDriverError,
    ReplicaSpec,
    Stage,
    TemporaryDriverError,
)


class FakeDriver(Driver):
    kind = "fake"

    def __init__(self) -> None:
        self.replicas: dict[str, ObservedReplica] = {}
        self.healthy: set[str] = set()  # backend ids answering 200 on /health
        self.created: list[str] = []
        self.removed: list[str] = []
        self.fail_with: Exception | None = None  # raised by every call while set
        self.fail_create: Exception | None = None
        self.auto_ready = False
        self.terminated: list[str] = []  # names of replicas asked to stop gracefully
        self.exit_on_terminate = False
        self._ids = itertools.count(1)

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def list(self, deployment_id: int | None = None) -> list[ObservedReplica]:
        self._maybe_fail()
        return [r for r in self.replicas.values() if deployment_id is None or r.deployment_id == deployment_id]

    def create(self, spec: ReplicaSpec) -> ObservedReplica:
        self._maybe_fail()
        if self.fail_create is not None:
            raise self.fail_create
        backend_id = f"fake-{next(self._ids)}"
        replica = ObservedReplica(
            name=spec.name,
            backend_id=backend_id,
            deployment_id=spec.deployment_id,
            generation=spec.generation,
            state=BackendState.RUNNING,
            endpoint=f"http://fake/{backend_id}",
            started_at=datetime.now(UTC),
            labels=spec.labels,
        )
        self.replicas[backend_id] = replica
        self.created.append(spec.name)
        if self.auto_ready:
            self.healthy.add(backend_id)
        return replica

    def remove(self, backend_id: str) -> None:
        self._maybe_fail()
        replica = self.replicas.pop(backend_id, None)
        self.healthy.discard(backend_id)
        if replica is not None:
            self.removed.append(replica.name)

    def terminate(self, backend_id: str) -> None:
        """SIGTERM: recorded; the replica exits at once (drained) if ``exit_on_terminate``."""
        self._maybe_fail()
        self.terminated.append(self.replicas[backend_id].name)
        if self.exit_on_terminate:
            self.kill(backend_id, exit_code=0)

    def logs(self, backend_id: str, tail: int = 200) -> str:
        return f"hangar-runtime: stage=loading_model model=/m\nlog of {backend_id}\n"

    def health(self, endpoint: str) -> bool:
        self._maybe_fail()
        return endpoint.rsplit("/", 1)[-1] in self.healthy

    def stage(self, backend_id: str) -> Stage | None:
        return Stage(step="loading_model", detail="model=/m")

    # test helpers
    def make_all_ready(self) -> None:
        self.healthy = set(self.replicas)

    def kill(self, backend_id: str, exit_code: int = 137) -> None:
        replica = self.replicas[backend_id]
        replica.state = BackendState.EXITED
        replica.exit_code = exit_code
        self.healthy.discard(backend_id)

    def names(self, deployment_id: int | None = None) -> list[str]:
        return sorted(r.name for r in self.list(deployment_id))


def temporary(message: str = "Docker daemon at tcp://127.0.0.1:1 is unreachable") -> Any:
    return TemporaryDriverError(message, reason="DaemonUnreachable")


def permanent(message: str = "Runtime image missing; build it with `deploy/images/build`") -> Any:
    return PermanentDriverError(message, reason="ImageMissing")
