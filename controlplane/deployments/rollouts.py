"""Rollouts: how a deployment moves from its stable revision to a new one.

- **Rolling** (default): the reconciler replaces replicas step by step within ``max_surge``
  (extra replicas above the desired count) and ``max_unavailable`` (ready replicas below it).
  Counts or percentages; when unset, chosen so that a rollout never needs more GPUs than the
  tenant's quota and the target have free (surge 1 if one more replica fits, else surge 0 and
  unavailable 1).
- **Canary**: the new revision gets a few replicas and a weight of the traffic (the gateway
  splits, ``controlplane.gateway.traffic``); each step holds for its pause, then moves on if the
  analysis of the gateway's own measurements (error rate, p95 latency, TTFT of canary against
  stable, after a minimum of requests) passes. A failed analysis aborts: traffic back to stable,
  the template back to the stable revision (canary replicas go), phase ``RolledBack``.

Services here write rows; the worker (``workers.rollout_strategy``) calls them as the reconciler
observes. The split and the analysis read counters the gateway keeps in Redis (``stats_key``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from controlplane.audit.services import audit_record
from controlplane.core.context import Actor
from controlplane.core.exceptions import Conflict, ValidationFailed
from controlplane.core.realtime import deployment_group, publish_on_commit, tenant_group
from controlplane.core.tasks import RECONCILE_DEPLOYMENT, enqueue_on_commit
from controlplane.deployments.choices import (
    DesiredState,
    EventType,
    Phase,
    RolloutState,
    RolloutStrategy,
    Sticky,
    TargetKind,
)
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, Revision, Rollout, RolloutPolicy

MAX_STEPS = 10
MAX_PAUSE_SECONDS = 7 * 24 * 3600
DEFAULT_STEPS: list[dict[str, Any]] = [
    {"weight": 10, "pause_seconds": 60},
    {"weight": 50, "pause_seconds": 60},
    {"weight": 100},
]
DEFAULT_ANALYSIS: dict[str, float] = {
    "min_requests": 20,  # canary requests before a verdict
    "max_error_rate": 0.05,  # canary error rate above stable's by more than this fails
    "max_p95_latency_ratio": 3.0,  # canary p95 latency over stable's
    "max_ttft_ratio": 3.0,  # canary p95 time to first token over stable's
}
ANALYSIS_BOUNDS: dict[str, tuple[float, float]] = {
    "min_requests": (0, 1_000_000),
    "max_error_rate": (0.0, 1.0),
    "max_p95_latency_ratio": (1.0, 1000.0),
    "max_ttft_ratio": (1.0, 1000.0),
}
# Latency histogram bucket upper bounds (seconds) the gateway counts into; the last is +Inf.
BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, math.inf)
STATS_TTL_SECONDS = 7 * 24 * 3600


def stats_key(rollout_id: int, side: str) -> str:
    """The Redis hash of one side ("stable" or "canary") of a rollout: requests, errors, histograms."""
    return f"hangar:rollout:{rollout_id}:{side}"


# ----------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Budget:
    """Resolved surge/unavailable of a deployment, in replicas."""

    max_surge: int
    max_unavailable: int


def _amount(text: str, field: str) -> tuple[int, bool] | None:
    """("3", ...) -> (3, False); ("25%", ...) -> (25, True); "" -> None; else a 400."""
    if text == "":
        return None
    percent = text.endswith("%")
    digits = text[:-1] if percent else text
    if not digits.isdigit() or len(digits) > 3 or (percent and int(digits) > 100):
        raise ValidationFailed(
            "Invalid rollout policy.", field_errors={field: ["A count (e.g. 1) or a percentage (e.g. 25%)."]}
        )
    return int(digits), percent


def _resolve(text: str, replicas: int, *, round_up: bool) -> int | None:
    amount = _amount(text, "max_surge")
    if amount is None:
        return None
    value, percent = amount
    if not percent:
        return value
    exact = replicas * value / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def _clean_steps(steps: Any) -> list[dict[str, Any]]:
    problem = ""
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        problem = f"A list of 1 to {MAX_STEPS} steps."
    clean: list[dict[str, Any]] = []
    last = 0
    for step in steps if not problem else []:
        weight = step.get("weight") if isinstance(step, dict) else None
        pause = step.get("pause_seconds") if isinstance(step, dict) else None
        if not isinstance(step, dict) or set(step) - {"weight", "pause_seconds"}:
            problem = 'Each step is {"weight": 1-100, "pause_seconds": seconds or null}.'
        elif isinstance(weight, bool) or not isinstance(weight, int) or not last < weight <= 100:
            problem = "Weights are whole percentages from 1 to 100, increasing."
        elif pause is not None and (
            isinstance(pause, bool) or not isinstance(pause, int) or not 0 <= pause <= MAX_PAUSE_SECONDS
        ):
            problem = f"pause_seconds is 0 to {MAX_PAUSE_SECONDS}, or null (wait for a promote)."
        if problem:
            break
        last = int(weight or 0)
        clean.append({"weight": weight, "pause_seconds": pause})
    if problem:
        raise ValidationFailed("Invalid rollout policy.", field_errors={"steps": [problem]})
    return clean


def _clean_analysis(analysis: Any) -> dict[str, float]:
    if not isinstance(analysis, dict):
        raise ValidationFailed("Invalid rollout policy.", field_errors={"analysis": ["An object."]})
    errors: dict[str, list[str]] = {}
    clean = dict(DEFAULT_ANALYSIS)
    for key, value in analysis.items():
        bounds = ANALYSIS_BOUNDS.get(key)
        if bounds is None:
            errors[f"analysis.{key}"] = [f"Unknown; use {', '.join(ANALYSIS_BOUNDS)}."]
        elif isinstance(value, bool) or not isinstance(value, int | float) or not bounds[0] <= value <= bounds[1]:
            errors[f"analysis.{key}"] = [f"A number from {bounds[0]:g} to {bounds[1]:g}."]
        else:
            clean[key] = float(value) if key != "min_requests" else int(value)
    if errors:
        raise ValidationFailed("Invalid rollout policy.", field_errors=errors)
    return clean


def policy_of(deployment: Deployment) -> RolloutPolicy:
    """The deployment's policy, or the defaults (unsaved) when it has none."""
    policy = RolloutPolicy.objects.filter(deployment_id=deployment.pk).first()
    return policy or RolloutPolicy(deployment=deployment)


@transaction.atomic
def rollout_policy_set(*, actor: Actor, deployment: Deployment, data: dict[str, Any]) -> RolloutPolicy:
    """Validate and save the rollout policy (applies to the next revision)."""
    policy = policy_of(deployment)
    fields = {"strategy", "max_surge", "max_unavailable", "steps", "analysis", "sticky"}
    unknown = set(data) - fields
    if unknown:
        raise ValidationFailed("Invalid rollout policy.", field_errors={k: ["Unknown field."] for k in sorted(unknown)})
    for name, choices in (("strategy", RolloutStrategy), ("sticky", Sticky)):
        if name in data:
            if data[name] not in choices.values:
                raise ValidationFailed("Invalid rollout policy.", field_errors={name: [f"One of {choices.values}."]})
            setattr(policy, name, data[name])
    for name in ("max_surge", "max_unavailable"):
        if name in data:
            text = str(data[name]).strip() if data[name] is not None else ""
            _amount(text, name)
            setattr(policy, name, text)
    if "steps" in data:
        policy.steps = _clean_steps(data["steps"])
    if "analysis" in data:
        policy.analysis = _clean_analysis(data["analysis"])
    if policy.max_surge and policy.max_unavailable and _zero(policy.max_surge) and _zero(policy.max_unavailable):
        raise ValidationFailed(
            "Invalid rollout policy.",
            field_errors={"max_unavailable": ["max_surge and max_unavailable cannot both be 0: nothing could move."]},
        )
    policy.save()
    audit_record(
        actor=actor,
        action="deployment.rollout_policy",
        obj=deployment,
        changes={k: getattr(policy, k) for k in sorted(fields)},
    )
    return policy


def _zero(text: str) -> bool:
    amount = _amount(text, "max_surge")
    return amount is not None and amount[0] == 0


def free_gpus(deployment: Deployment) -> float:
    """GPUs one more replica could take: the least of the tenant's quota room and the target's free GPUs."""
    others = Deployment.objects.exclude(desired_state=DesiredState.DELETED)
    used_target = others.filter(target_id=deployment.target_id).aggregate(n=Sum(F("gpus") * F("replicas")))["n"] or 0
    inventory = deployment.target.gpu_inventory
    room = (len(inventory) if isinstance(inventory, list) else 0) - used_target
    limit = deployment.tenant.quota_gpus
    if limit is not None:
        used_tenant = (
            others.filter(tenant_id=deployment.tenant_id).aggregate(n=Sum(F("gpus") * F("replicas")))["n"] or 0
        )
        room = min(room, limit - used_tenant)
    return float(room)


def budget(deployment: Deployment, policy: RolloutPolicy, replicas: int) -> Budget:
    """max_surge / max_unavailable of a policy in replicas, defaults fitted to the free GPUs."""
    surge = _resolve(policy.max_surge, replicas, round_up=True)
    unavailable = _resolve(policy.max_unavailable, replicas, round_up=False)
    if surge is None and unavailable is None:
        fits = deployment.gpus == 0 or free_gpus(deployment) >= deployment.gpus
        surge, unavailable = (1, 0) if fits else (0, 1)
    surge = surge if surge is not None else 0
    unavailable = unavailable if unavailable is not None else (0 if surge else 1)
    if surge == 0 and unavailable == 0:
        surge = 1  # a percentage rounded both to 0: move anyway, one extra replica at a time
    return Budget(max_surge=surge, max_unavailable=unavailable)


# ----------------------------------------------------------------------------- rollouts


def rollout_active(deployment_id: int) -> Rollout | None:
    return Rollout.objects.filter(deployment_id=deployment_id, state__in=RolloutState.active()).order_by("-id").first()


def _push(deployment: Deployment, rollout: Rollout, notice: str = "") -> None:
    payload = {"kind": "rollout", "deployment": deployment.pk, "rollout": rollout_view(rollout), "notice": notice}
    publish_on_commit(deployment_group(deployment.pk), payload)
    publish_on_commit(tenant_group(deployment.tenant_id), payload)


def rollout_view(rollout: Rollout) -> dict[str, Any]:
    """What the API and the dashboard show of a rollout."""
    return {
        "id": rollout.pk,
        "strategy": rollout.strategy,
        "state": rollout.state,
        "stable_revision": rollout.stable_revision,
        "canary_revision": rollout.canary_revision,
        "step": rollout.step,
        "steps": rollout.steps,
        "weight": rollout.weight,
        "sticky": rollout.sticky,
        "analysis_policy": rollout.analysis_policy,
        "analysis": rollout.analysis,
        "detail": rollout.detail,
        "reason": rollout.reason,
        "actor": rollout.actor,
        "started_at": rollout.started_at.isoformat() if rollout.started_at else None,
        "step_started_at": rollout.step_started_at.isoformat() if rollout.step_started_at else None,
        "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
    }


def rollout_begin(
    *, deployment: Deployment, previous: int, revision: Revision, actor: Actor, rollback: bool
) -> Rollout:
    """Start moving to ``revision`` (inside the service's transaction). A rollout in progress is
    superseded; a canary started from it keeps its stable revision (the one with the replicas)."""
    now = timezone.now()
    stable = previous
    for active in Rollout.objects.select_for_update().filter(
        deployment_id=deployment.pk, state__in=RolloutState.active()
    ):
        if active.strategy == RolloutStrategy.CANARY and active.state in RolloutState.splitting():
            stable = active.stable_revision
        Rollout.objects.filter(pk=active.pk).update(
            state=RolloutState.SUPERSEDED, finished_at=now, reason=f"Superseded by revision {revision.number}"
        )
    policy = policy_of(deployment)
    serving = deployment.phase in Phase.serving() and deployment.replicas > 0
    # Kubernetes rolls its pods itself (workers.reconciler.run_group): canaries need replicas the
    # reconciler places one by one (local, Docker), so there a new revision rolls.
    per_replica = deployment.target.kind != TargetKind.KUBERNETES
    canary = policy.strategy == RolloutStrategy.CANARY and serving and per_replica and not rollback
    steps = (policy.steps or DEFAULT_STEPS) if canary else []
    rollout = Rollout.objects.create(
        tenant_id=deployment.tenant_id,
        deployment=deployment,
        strategy=RolloutStrategy.CANARY if canary else RolloutStrategy.ROLLING,
        stable_revision=stable,
        canary_revision=revision.number,
        state=RolloutState.PROGRESSING if canary else RolloutState.PROMOTED,
        weight=steps[0]["weight"] if canary else 100,
        steps=steps,
        analysis_policy={**DEFAULT_ANALYSIS, **(policy.analysis or {})} if canary else {},
        sticky=policy.sticky,
        actor=actor.label[:150],
        step_started_at=now,
        detail=f"Canary step 1/{len(steps)}: {steps[0]['weight']}% of requests" if canary else "Rolling update",
    )
    if canary:
        transaction.on_commit(lambda: _reset_stats(rollout.pk))
        event_emit(
            deployment=deployment,
            reason="CanaryStarted",
            message=f"Canary of revision {revision.number} against revision {stable}: "
            + " → ".join(f"{s['weight']}%" for s in steps),
            actor=actor.label,
        )
    _push(deployment, rollout)
    return rollout


def _reset_stats(rollout_id: int) -> None:
    """A new rollout starts from empty counters (ids repeat when a database is recreated)."""
    import redis
    from django.conf import settings

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        client.delete(stats_key(rollout_id, "stable"), stats_key(rollout_id, "canary"))
    except redis.RedisError:
        pass  # counters expire on their own (STATS_TTL_SECONDS); the analysis waits for requests anyway


def _locked(rollout: Rollout) -> tuple[Deployment, Rollout]:
    from controlplane.deployments.services import _lock

    deployment = _lock(Deployment.objects.get(pk=rollout.deployment_id))
    return deployment, Rollout.objects.select_for_update().get(pk=rollout.pk)


@transaction.atomic
def rollout_abort(*, actor: Actor, rollout: Rollout, reason: str, automatic: bool = False) -> Rollout:
    """Send all traffic back to stable and remove the canary: the template returns to the stable
    revision (whose replicas are still running), the deployment shows ``RolledBack``."""
    from controlplane.deployments.revisions import restore_template

    deployment, rollout = _locked(rollout)
    if rollout.strategy != RolloutStrategy.CANARY or rollout.state not in RolloutState.splitting():
        raise Conflict(f"This rollout is {rollout.state}; only a canary in progress can be aborted.")
    if deployment.template_generation != rollout.canary_revision:
        raise Conflict("The deployment moved on since this canary started.")
    stable = Revision.objects.get(deployment_id=deployment.pk, number=rollout.stable_revision)
    restore_template(deployment, stable)
    now = timezone.now()
    Rollout.objects.filter(pk=rollout.pk).update(
        state=RolloutState.ROLLED_BACK, weight=0, reason=reason[:1000], finished_at=now, detail="Rolled back"
    )
    Deployment.objects.filter(pk=deployment.pk).update(
        template_generation=stable.number,
        generation=F("generation") + 1,
        phase=Phase.ROLLED_BACK,
        phase_message=reason[:1000],
    )
    rollout.refresh_from_db()
    message = f"Canary of revision {rollout.canary_revision} rolled back to revision {stable.number}: {reason}"
    event_emit(deployment=deployment, reason="RolledBack", message=message, type=EventType.WARNING, actor=actor.label)
    audit_record(
        actor=actor,
        action="deployment.rollout_abort",
        obj=deployment,
        changes={"rollout": rollout.pk, "to_revision": stable.number, "reason": reason[:500], "automatic": automatic},
    )
    enqueue_on_commit(RECONCILE_DEPLOYMENT, deployment.pk)
    _push(deployment, rollout, notice=message)
    return rollout


@transaction.atomic
def rollout_promote(*, actor: Actor, rollout: Rollout) -> Rollout:
    """Skip the remaining steps: all traffic to the canary, its replicas replace the rest."""
    deployment, rollout = _locked(rollout)
    if rollout.strategy != RolloutStrategy.CANARY or rollout.state not in RolloutState.splitting():
        raise Conflict(f"This rollout is {rollout.state}; only a canary in progress can be promoted.")
    Rollout.objects.filter(pk=rollout.pk).update(
        state=RolloutState.PROMOTED, weight=100, detail="Promoted by hand: replacing the stable replicas"
    )
    rollout.refresh_from_db()
    event_emit(
        deployment=deployment,
        reason="CanaryPromoted",
        message=f"Revision {rollout.canary_revision} promoted by {actor.label}",
        actor=actor.label,
    )
    audit_record(actor=actor, action="deployment.rollout_promote", obj=deployment, changes={"rollout": rollout.pk})
    enqueue_on_commit(RECONCILE_DEPLOYMENT, deployment.pk)
    _push(deployment, rollout)
    return rollout


def rollout_step(*, rollout: Rollout, step: int, analysis: dict[str, Any]) -> Rollout:
    """The worker moves a canary to its next step (or to Promoted after the last one)."""
    deployment = Deployment.objects.get(pk=rollout.deployment_id)
    steps = rollout.steps
    weight = steps[step]["weight"] if step < len(steps) else 100
    promoted = weight >= 100
    detail = (
        "All steps passed: replacing the stable replicas"
        if promoted
        else f"Canary step {step + 1}/{len(steps)}: {weight}% of requests"
    )
    updated = Rollout.objects.filter(pk=rollout.pk, state=rollout.state, step=rollout.step).update(
        state=RolloutState.PROMOTED if promoted else RolloutState.PROGRESSING,
        step=step,
        weight=weight,
        step_started_at=timezone.now(),
        analysis=analysis,
        detail=detail,
    )
    rollout.refresh_from_db()
    if updated:
        event_emit(
            deployment=deployment,
            reason="CanaryPromoted" if promoted else "CanaryStep",
            message=f"Revision {rollout.canary_revision}: {detail}",
            actor="system:rollout",
        )
        _push(deployment, rollout)
    return rollout


def rollout_observe(*, rollout: Rollout, **fields: Any) -> None:
    """Record what the worker saw (analysis, detail, pause, first error) when it changed."""
    changed = {k: v for k, v in fields.items() if getattr(rollout, k) != v}
    if not changed:
        return
    Rollout.objects.filter(pk=rollout.pk).update(**changed)
    for key, value in changed.items():
        setattr(rollout, key, value)
    _push(Deployment.objects.get(pk=rollout.deployment_id), rollout)


def rollout_complete(*, rollout: Rollout) -> None:
    """Every replica runs the new revision. The state and its event commit together: whoever
    sees the rollout completed also finds the event."""
    with transaction.atomic():
        updated = Rollout.objects.filter(pk=rollout.pk, state=RolloutState.PROMOTED).update(
            state=RolloutState.COMPLETED, finished_at=timezone.now(), detail="Every replica runs the new revision"
        )
        if not updated:
            return
        rollout.refresh_from_db()
        deployment = Deployment.objects.get(pk=rollout.deployment_id)
        event_emit(
            deployment=deployment,
            reason="RolloutComplete",
            message=f"Every replica runs revision {rollout.canary_revision}",
            actor="system:rollout",
        )
    _push(deployment, rollout)


def rollout_list(*, deployment: Deployment) -> list[Rollout]:
    return list(Rollout.objects.filter(deployment_id=deployment.pk).order_by("-id")[:20])
