"""Writes of observed state, used by the reconciler: lease, phase, conditions, replicas, progress.

Every write is a compare-and-set on the reconcile lease (``reconcile_lease_owner``), so a worker
whose lease expired and was taken over can no longer overwrite what the new holder observed.
Events are appended only when something changed, so running the reconciler twice leaves the
timeline as it was. Live updates go out after commit through ``controlplane.core.realtime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.audit.services import audit_record
from controlplane.core.context import Actor
from controlplane.core.realtime import deployment_group, publish_on_commit, tenant_group
from controlplane.deployments.choices import ConditionType, DesiredState, EventType, Phase, ReplicaState
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, Replica, Target

WARNING_PHASES = {Phase.DEGRADED, Phase.FAILED}


# ----------------------------------------------------------------------------- lease


def deployment_claim(*, deployment_id: int, owner: str, lease_seconds: float) -> Deployment | None:
    """Take the reconcile lease if it is free, expired or already ours; ``None`` if another holds it."""
    now = timezone.now()
    claimed = (
        Deployment.objects.filter(pk=deployment_id)
        .filter(
            Q(reconcile_lease_until__isnull=True) | Q(reconcile_lease_until__lt=now) | Q(reconcile_lease_owner=owner)
        )
        .update(reconcile_lease_owner=owner, reconcile_lease_until=now + timedelta(seconds=lease_seconds))
    )
    if not claimed:
        return None
    return Deployment.objects.select_related("model", "target").filter(pk=deployment_id).first()


def deployment_renew(*, deployment_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend our lease before a slow step; False if we lost it (stop working then)."""
    return bool(
        Deployment.objects.filter(pk=deployment_id, reconcile_lease_owner=owner).update(
            reconcile_lease_until=timezone.now() + timedelta(seconds=lease_seconds)
        )
    )


def deployment_release(*, deployment_id: int, owner: str) -> None:
    Deployment.objects.filter(pk=deployment_id, reconcile_lease_owner=owner).update(
        reconcile_lease_owner="", reconcile_lease_until=None
    )


# ----------------------------------------------------------------------------- conditions


def condition_set(
    conditions: list[dict[str, Any]], *, type: str, status: bool | None, reason: str, message: str = ""
) -> list[dict[str, Any]]:
    """Return ``conditions`` with one condition set; the transition time moves only when status flips."""
    text = "Unknown" if status is None else ("True" if status else "False")
    now = timezone.now().isoformat()
    result = []
    found = False
    for item in conditions:
        if item.get("type") == type:
            found = True
            moved = item.get("status") != text
            result.append(
                {
                    "type": type,
                    "status": text,
                    "reason": reason,
                    "message": message[:1000],
                    "last_transition_time": now if moved else item.get("last_transition_time", now),
                }
            )
        else:
            result.append(item)
    if not found:
        result.append(
            {"type": type, "status": text, "reason": reason, "message": message[:1000], "last_transition_time": now}
        )
    order = {value: index for index, value in enumerate(ConditionType.values)}
    return sorted(result, key=lambda c: order.get(c["type"], len(order)))


def _same_conditions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def strip(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in items]

    return strip(a) == strip(b)


# ----------------------------------------------------------------------------- status


@dataclass
class StatusUpdate:
    """The observed state the reconciler computed in one pass."""

    phase: str
    message: str = ""
    reason: str = ""
    ready_replicas: int = 0
    observed_generation: int | None = None  # set when the current generation is fully applied
    conditions: dict[str, tuple[bool | None, str, str]] | None = None  # type -> (status, reason, message)
    progress: dict[str, str] | None = None  # {"step", "detail"}; {} clears it


def deployment_status_write(*, deployment: Deployment, owner: str, update: StatusUpdate) -> bool:
    """Compare-and-set the deployment's observed state; append a phase event only on change.

    Returns False when the lease is no longer ours (nothing written).
    """
    with transaction.atomic():
        current = (
            Deployment.objects.select_for_update()
            .filter(pk=deployment.pk, reconcile_lease_owner=owner)
            .only(
                "id",
                "tenant_id",
                "phase",
                "phase_message",
                "conditions",
                "ready_replicas",
                "observed_generation",
                "progress",
                "replicas",
                "generation",
                "desired_state",
            )
            .first()
        )
        if current is None:
            return False
        changes = _status_changes(current, update)
        if not changes:
            Deployment.objects.filter(pk=current.pk).update(reconciled_at=timezone.now())
            return True
        Deployment.objects.filter(pk=current.pk, reconcile_lease_owner=owner).update(
            **changes, reconciled_at=timezone.now()
        )
        for key, value in changes.items():
            setattr(current, key, value)
            setattr(deployment, key, value)
        if "phase" in changes or ("phase_message" in changes and update.phase in WARNING_PHASES):
            event_emit(
                deployment=current,
                reason=update.reason or update.phase,
                message=update.message or f"Phase {update.phase}",
                type=EventType.WARNING if update.phase in WARNING_PHASES else EventType.NORMAL,
                actor="system:reconciler",
            )
        deployment_push(current)
    return True


def deployment_progress_write(*, deployment: Deployment, owner: str, progress: dict[str, str]) -> bool:
    """Only the progress (a model download's bytes and rate), compare-and-set on the lease; pushed live."""
    value = progress | {"at": timezone.now().isoformat()}
    with transaction.atomic():
        if not Deployment.objects.filter(pk=deployment.pk, reconcile_lease_owner=owner).update(progress=value):
            return False
        deployment.progress = value
        deployment_push(deployment)
    return True


def _status_changes(current: Deployment, update: StatusUpdate) -> dict[str, Any]:
    """The fields of ``current`` that ``update`` changes (empty: nothing to write)."""
    conditions = list(current.conditions)
    for type_, (status, reason, message) in (update.conditions or {}).items():
        conditions = condition_set(conditions, type=type_, status=status, reason=reason, message=message)
    wanted: dict[str, Any] = {
        "phase": update.phase,
        "phase_message": update.message[:1000],
        "ready_replicas": update.ready_replicas,
    }
    changes = {key: value for key, value in wanted.items() if getattr(current, key) != value}
    if not _same_conditions(current.conditions, conditions):
        changes["conditions"] = conditions
    if update.observed_generation is not None and current.observed_generation != update.observed_generation:
        changes["observed_generation"] = update.observed_generation
    if update.progress is not None and _progress_key(current.progress) != _progress_key(update.progress):
        changes["progress"] = (update.progress | {"at": timezone.now().isoformat()}) if update.progress else {}
    return changes


def _progress_key(progress: dict[str, str] | None) -> dict[str, str | None]:
    """What tells two progress values apart (not the time they were written)."""
    return {k: progress.get(k) for k in ("step", "detail")} if progress else {}


def deployment_push(deployment: Deployment) -> None:
    """Send the deployment's live state to its websocket groups after commit."""
    payload = {
        "kind": "deployment",
        "deployment": deployment.pk,
        "phase": deployment.phase,
        "phase_message": deployment.phase_message,
        "replicas": deployment.replicas,
        "ready_replicas": deployment.ready_replicas,
        "generation": deployment.generation,
        "observed_generation": deployment.observed_generation,
        "desired_state": deployment.desired_state,
        "progress": deployment.progress,
        "conditions": deployment.conditions,
    }
    publish_on_commit(deployment_group(deployment.pk), payload)
    publish_on_commit(tenant_group(deployment.tenant_id), payload)


# ----------------------------------------------------------------------------- replicas


@dataclass
class ReplicaObservation:
    """One replica as the reconciler saw it this pass (backend state + /health)."""

    name: str
    backend_id: str
    generation: int
    endpoint: str
    state: str  # ReplicaState
    started_at: datetime | None = None
    healthy: bool = False
    error: str = ""


def replicas_sync(*, deployment: Deployment, observed: list[ReplicaObservation]) -> dict[str, Replica]:
    """Make the Replica rows mirror ``observed``: create, update what changed, delete the rest.

    Health bookkeeping: a healthy check sets ``last_heartbeat_at`` and clears
    ``consecutive_failures``; an unhealthy check of a replica that was ready counts one failure.
    Returns the rows by name (with the updated failure counts).
    """
    now = timezone.now()
    rows = {r.name: r for r in Replica.objects.filter(deployment_id=deployment.pk)}
    result: dict[str, Replica] = {}
    for obs in observed:
        row = rows.get(obs.name)
        if row is None:
            row = _replica_new(deployment, obs, now)
            row.save()
        else:
            fields = _replica_changes(row, obs, now)
            if fields:
                Replica.objects.filter(pk=row.pk).update(**fields, updated_at=now)
                for key, value in fields.items():
                    setattr(row, key, value)
        result[obs.name] = row
    gone = [row.pk for name, row in rows.items() if name not in result]
    if gone:
        Replica.objects.filter(pk__in=gone).delete()
    return result


def _replica_new(deployment: Deployment, obs: ReplicaObservation, now: datetime) -> Replica:
    return Replica(
        tenant_id=deployment.tenant_id,
        deployment_id=deployment.pk,
        name=obs.name,
        backend_id=obs.backend_id,
        generation=obs.generation,
        endpoint=obs.endpoint,
        state=obs.state,
        started_at=obs.started_at or now,
        ready_at=now if obs.state == ReplicaState.READY else None,
        last_heartbeat_at=now if obs.healthy else None,
        last_error=obs.error[:1000],
    )


def _replica_changes(row: Replica, obs: ReplicaObservation, now: datetime) -> dict[str, Any]:
    """The fields of ``row`` that ``obs`` changes, health bookkeeping included."""
    fields: dict[str, Any] = {}
    ready_at, failures = row.ready_at, row.consecutive_failures
    if row.backend_id != obs.backend_id:
        # Same name, new incarnation (a replaced replica): its history starts over.
        ready_at, failures = None, 0
        fields.update(
            started_at=obs.started_at or now,
            ready_at=None,
            last_heartbeat_at=None,
            consecutive_failures=0,
            last_error="",
        )
    if obs.healthy:
        fields["last_heartbeat_at"] = now
        if failures:
            fields["consecutive_failures"] = 0
    elif ready_at is not None and obs.state != ReplicaState.EXITED:
        fields["consecutive_failures"] = failures + 1
    if obs.state == ReplicaState.READY and ready_at is None:
        fields["ready_at"] = now
    for attr in ("backend_id", "generation", "endpoint", "state"):
        if getattr(row, attr) != getattr(obs, attr):
            fields[attr] = getattr(obs, attr)
    if obs.error and row.last_error != obs.error[:1000]:
        fields["last_error"] = obs.error[:1000]
    return fields


def deployment_delete_row(*, deployment: Deployment, owner: str) -> bool:
    """Delete a deployment whose backend resources are verifiably gone (replicas, events cascade)."""
    with transaction.atomic():
        deleted, _ = Deployment.objects.filter(
            pk=deployment.pk, reconcile_lease_owner=owner, desired_state=DesiredState.DELETED
        ).delete()
        if deleted:
            payload = {"kind": "deployment", "deployment": deployment.pk, "deleted": True, "phase": Phase.DELETING}
            publish_on_commit(deployment_group(deployment.pk), payload)
            publish_on_commit(tenant_group(deployment.tenant_id), payload)
    return bool(deleted)


WORKER = Actor(user=None, via="worker")


def target_health_write(*, target_id: int, health: dict[str, Any], requested_by: str = "") -> None:
    """Record what ``check_target`` saw (reachability, version, GPUs), and audit it as
    ``target.checked`` when someone asked for the check (``requested_by``, the label of whoever
    did) or the status changed; the periodic checks of an unchanged target add no rows."""
    with transaction.atomic():
        target = Target.objects.select_for_update().filter(pk=target_id).first()
        if target is None:
            return
        before = (target.health or {}).get("status")
        Target.objects.filter(pk=target_id).update(health=health, health_checked_at=timezone.now())
        after = health.get("status")
        if requested_by or before != after:
            changes: dict[str, Any] = {"status": [before, after], "reason": health.get("reason", "")}
            if requested_by:
                changes["requested_by"] = requested_by[:150]
            audit_record(actor=WORKER, action="target.checked", obj=target, changes=changes)
