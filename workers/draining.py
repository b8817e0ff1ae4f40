"""Graceful removal of replicas, the reconciler's half (the control plane's is
``controlplane.deployments.draining``).

A replica the reconciler no longer wants (scaled away, replaced by a new generation, stopped)
that may be serving leaves in three steps, one per pass, never blocking a pass:

1. ``retire``: its row turns ``terminating`` and every gateway process is told; it is no longer
   counted or health-checked, and its slot stays taken.
2. ``advance``, once every gateway has dropped it (``route_drop_seconds``): it is asked to stop
   (SIGTERM): it finishes the requests it has and refuses new ones with 503 (the gateway passes
   those to another replica).
3. ``advance``, once it has exited, or after ``HANGAR_REPLICA_DRAIN_SECONDS``: it is removed
   (killed if still running).

A replica that never served (not ready) leaves at once, and so does every one when
``HANGAR_REPLICA_DRAIN_SECONDS`` is 0.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings

from controlplane.deployments.choices import ReplicaState
from controlplane.deployments.draining import replica_stop_begin, replicas_drain_begin, route_drop_seconds
from controlplane.deployments.status import ReplicaObservation
from workers.drivers.base import ObservedReplica

if TYPE_CHECKING:
    from workers.reconciler import Actuator, Observation

POLL_WHILE_DRAINING_S = 0.5


def split(seen: Observation) -> Observation:
    """Take the replicas already on their way out out of ``seen.replicas`` into ``seen.leaving``."""
    leaving: list[ObservedReplica] = []
    staying: list[ObservedReplica] = []
    for replica in seen.replicas:
        row = seen.row(replica)
        (leaving if row is not None and row.state == ReplicaState.TERMINATING else staying).append(replica)
    return dataclasses.replace(seen, replicas=tuple(staying), leaving=tuple(leaving))


def retire(act: Actuator, replica: ObservedReplica, *, serving: bool, reason: str, message: str) -> None:
    """Remove a replica the pass no longer wants: drained if it may be serving, else at once."""
    if serving and settings.HANGAR_REPLICA_DRAIN_SECONDS > 0:
        act.retiring.append(replica)
        act.event(reason, f"{message}; draining it first")
        return
    act.remove(replica, reason, message)


def advance(act: Actuator, seen: Observation) -> tuple[ObservedReplica, ...]:
    """Move each leaving replica one step on; returns the ones still leaving."""
    remaining = []
    grace = settings.HANGAR_REPLICA_DRAIN_SECONDS
    for replica in seen.leaving:
        row = seen.row(replica)
        assert row is not None  # split() put it here for its row
        since = row.draining_since or seen.now
        if not replica.alive:
            act.discard(replica)
            act.event("ReplicaStopped", f"Replica {replica.name} drained and stopped")
        elif row.stopping_since is None:
            if seen.now - since >= timedelta(seconds=route_drop_seconds()):
                act.renew()
                act.driver.terminate(replica.backend_id)
                replica_stop_begin(replica_id=row.pk, at=seen.now)
                act.actions.append(f"terminate {replica.name}")
            remaining.append(replica)
        elif seen.now - row.stopping_since >= timedelta(seconds=grace):
            act.discard(replica)
            act.event(
                "DrainTimeout",
                f"Replica {replica.name} still had requests in flight {grace:g} s after it was asked to stop; "
                "stopped it",
                warning=True,
            )
        else:
            remaining.append(replica)
    return tuple(remaining)


def observations(replicas: tuple[ObservedReplica, ...]) -> list[ReplicaObservation]:
    """Leaving replicas as the replica rows record them: terminating, out of routing."""
    return [
        ReplicaObservation(
            name=r.name,
            backend_id=r.backend_id,
            generation=r.generation,
            endpoint=r.endpoint,
            state=ReplicaState.TERMINATING,
            started_at=r.started_at,
        )
        for r in replicas
    ]


def begin(act: Actuator, now: datetime) -> None:
    """After the rows are written: stamp the newly retired ones and tell every gateway process."""
    if act.retiring:
        replicas_drain_begin(
            deployment_id=act.deployment.pk,
            tenant_id=act.deployment.tenant_id,
            names=[r.name for r in act.retiring],
            at=now,
        )
