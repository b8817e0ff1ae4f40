"""The worker's side of rollouts: how many replicas of each revision a pass keeps, and when a
canary moves on, waits or is rolled back.

The reconciler asks ``advance`` first (a canary whose analysis failed is aborted before anything
else moves), then ``budget`` (how many replicas of the current revision may exist and how many
ready old ones must stay), and reports with ``finish``. The rules:

- rolling: after the pass, ready replicas >= desired - max_unavailable and all replicas <=
  desired + max_surge (old unready ones go first: they serve nobody);
- canary at weight w (< 100 %): ceil(desired * w) canary replicas beside the full stable set, so
  stable capacity never drops while the canary is judged;
- a promoted canary rolls the rest within surge/unavailable like any rolling update.

The analysis compares the gateway's own counters (``controlplane.gateway.traffic``) of the two
sides of the split.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from controlplane.core.context import Actor
from controlplane.deployments import rollouts
from controlplane.deployments.choices import Phase, RolloutState, RolloutStrategy
from controlplane.deployments.models import Deployment, Rollout

logger = logging.getLogger(__name__)

ANALYSIS_ACTOR = Actor(user=None, via="analysis")
REQUEUE_WHILE_CANARY_S = 0.5


def fault_flags(deployment: Deployment) -> tuple[str, ...]:
    """The runtime's fault-switch flags of ``deployment``; none unless the installation allows it."""
    faults = deployment.faults or {}
    if not settings.HANGAR_FAULT_INJECTION or not faults:
        return ()
    names = {"error_rate": "--fault-error-rate", "delay_rate": "--fault-delay-rate", "delay_ms": "--fault-delay-ms"}
    # Numbers only (checked when written): str() of a float never starts with "-" here.
    return tuple(arg for key, flag in names.items() if key in faults for arg in (flag, str(float(faults[key]))))


# ------------------------------------------------------------------ replicas per revision


@dataclass(frozen=True)
class Counts:
    """What a pass sees: desired, current revision (all / ready), ready old replicas, and the
    replicas still draining on their way out (they hold their GPUs until they exit)."""

    desired: int
    current: int
    current_ready: int
    old_ready: int
    leaving: int = 0
    leaving_old: int = 0  # of those, replicas of an older revision (a rollout's replaced ones)


@dataclass(frozen=True)
class Budget:
    """What a pass may do: grow the current revision to ``current_target``, keep ``keep_old``
    ready old replicas (preferring ``stable_generation``), the rest of the old ones go."""

    current_target: int
    keep_old: int
    stable_generation: int | None = None
    surge: int = 0
    unavailable: int = 0
    canary_weight: int | None = None


def budget(deployment: Deployment, counts: Counts) -> Budget:
    rollout = rollouts.rollout_active(deployment.pk)
    n = counts.desired
    if rollout is not None and rollout.canary_revision != deployment.template_generation:
        rollout = None  # a stale row (the template moved without a rollout): roll plainly
    if (
        rollout is not None
        and rollout.strategy == RolloutStrategy.CANARY
        and rollout.state in RolloutState.splitting()
        and n > 0
    ):
        canary = min(n, max(1, math.ceil(n * rollout.weight / 100)))
        return Budget(canary, n, rollout.stable_revision, canary_weight=rollout.weight)
    if counts.old_ready == 0 and counts.leaving_old == 0:
        return Budget(n, 0)  # nothing ready to replace: plain scaling
    b = rollouts.budget(deployment, rollouts.policy_of(deployment), n)
    keep_old = min(counts.old_ready, max(0, n - b.max_unavailable - counts.current_ready))
    # Live replicas stay within desired + max surge: new ones, plus every serving old one (those
    # this pass retires drain for a while and hold their GPU meanwhile), plus those still leaving.
    lingering = counts.old_ready if settings.HANGAR_REPLICA_DRAIN_SECONDS > 0 else keep_old  # 0 s: gone at once
    target = min(n, max(counts.current, n + b.max_surge - lingering - counts.leaving))
    return Budget(target, keep_old, surge=b.max_surge, unavailable=b.max_unavailable)


def finish(deployment: Deployment, budget: Budget, *, ready_current: int, desired: int, old_left: int) -> None:
    """Record the rollout's progress per step; complete it once only the new revision runs."""
    rollout = rollouts.rollout_active(deployment.pk)
    if rollout is None or rollout.canary_revision != deployment.template_generation:
        return
    if rollout.state == RolloutState.PROMOTED:
        if old_left == 0 and ready_current >= desired:
            rollouts.rollout_complete(rollout=rollout)
            return
        detail = (
            f"{ready_current}/{desired} replicas of revision {rollout.canary_revision} ready, "
            f"{old_left} old left (max surge {budget.surge}, max unavailable {budget.unavailable})"
        )
        rollouts.rollout_observe(rollout=rollout, detail=detail[:500])


def phase_override(deployment: Deployment, phase: str) -> tuple[str, str] | None:
    """A converged deployment whose last canary was rolled back stays ``RolledBack`` (with why)
    until its next revision: the operator must see that the new version did not make it."""
    if phase != Phase.RUNNING:
        return None
    last = Rollout.objects.filter(deployment_id=deployment.pk).order_by("-id").first()
    if last is None or last.state != RolloutState.ROLLED_BACK or last.stable_revision != deployment.template_generation:
        return None
    return Phase.ROLLED_BACK, last.reason


# ------------------------------------------------------------------ canary analysis


@dataclass(frozen=True)
class Side:
    requests: int
    errors: int
    p95_latency: float | None
    p95_ttft: float | None
    first_error: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def view(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 4),
            "p95_latency": self.p95_latency,
            "p95_ttft": self.p95_ttft,
        }


def _p95(raw: dict[str, str], prefix: str) -> float | None:
    counts = [int(raw.get(f"{prefix}{i}", 0)) for i in range(len(rollouts.BUCKETS))]
    total = sum(counts)
    if not total:
        return None
    running = 0
    for bound, count in zip(rollouts.BUCKETS, counts, strict=True):
        running += count
        if running >= 0.95 * total:
            return bound if bound != math.inf else rollouts.BUCKETS[-2]
    return None


def read_side(client: redis.Redis, rollout_id: int, side: str) -> Side:
    stored: dict[bytes, bytes] = client.hgetall(rollouts.stats_key(rollout_id, side))  # type: ignore[assignment]
    raw = {k.decode(): v.decode() for k, v in stored.items()}
    first = raw.get("first_error")
    return Side(
        requests=int(raw.get("n", 0)),
        errors=int(raw.get("e", 0)),
        p95_latency=_p95(raw, "l"),
        p95_ttft=_p95(raw, "t"),
        first_error=float(first) if first else None,
    )


def verdict(policy: dict[str, Any], stable: Side, canary: Side) -> tuple[str, str]:
    """("fail" | "pass" | "wait", why) of the canary against stable under ``policy``."""
    need = int(policy.get("min_requests", 0))
    if canary.requests < need:
        return "wait", f"waiting for requests: {canary.requests}/{need} on the canary"
    worse = canary.error_rate - stable.error_rate
    if worse > float(policy["max_error_rate"]):
        return "fail", (
            f"error rate {canary.error_rate:.0%} on the canary against {stable.error_rate:.0%} on stable "
            f"over {canary.requests} requests (allowed: +{float(policy['max_error_rate']):.0%})"
        )
    for name, key, ratio_key in (
        ("p95 latency", "p95_latency", "max_p95_latency_ratio"),
        ("p95 TTFT", "p95_ttft", "max_ttft_ratio"),
    ):
        mine, theirs = getattr(canary, key), getattr(stable, key)
        if mine is not None and theirs and stable.requests >= need and mine / theirs > float(policy[ratio_key]):
            return (
                "fail",
                f"{name} {mine:g} s on the canary against {theirs:g} s on stable (allowed: ×{policy[ratio_key]:g})",
            )
    return "pass", f"canary within thresholds over {canary.requests} requests"


def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def advance(deployment: Deployment, now: datetime | None = None) -> tuple[Deployment, float | None]:
    """Judge a canary in progress: abort, move to its next step, or wait. Returns the deployment
    (re-read after an abort) and how soon the reconciler should look again (None: no canary)."""
    rollout = rollouts.rollout_active(deployment.pk)
    if (
        rollout is None
        or rollout.strategy != RolloutStrategy.CANARY
        or rollout.state not in RolloutState.splitting()
        or rollout.canary_revision != deployment.template_generation
    ):
        return deployment, None
    now = now or timezone.now()
    try:
        client = _client()
        stable, canary = read_side(client, rollout.pk, "stable"), read_side(client, rollout.pk, "canary")
    except redis.RedisError as exc:  # no measurements, no verdict: hold the step where it is
        logger.warning("canary analysis of deployment %s: Redis unavailable (%s)", deployment.pk, exc)
        return deployment, REQUEUE_WHILE_CANARY_S * 4
    result, why = verdict(rollout.analysis_policy, stable, canary)
    analysis = {"stable": stable.view(), "canary": canary.view(), "verdict": result, "why": why, "at": now.isoformat()}
    if result == "fail":
        first = canary.first_error
        if first is not None:
            analysis["first_error_at"] = datetime.fromtimestamp(first, tz=now.tzinfo).isoformat()
        rollouts.rollout_observe(rollout=rollout, analysis=analysis)
        rollouts.rollout_abort(
            actor=ANALYSIS_ACTOR, rollout=rollout, reason=f"Canary analysis failed: {why}", automatic=True
        )
        return Deployment.objects.select_related("model", "target").get(pk=deployment.pk), 0.0
    return deployment, _next_step(rollout, result, analysis, now)


def _next_step(rollout: Rollout, result: str, analysis: dict[str, Any], now: datetime) -> float:
    step = rollout.steps[rollout.step] if rollout.step < len(rollout.steps) else {"pause_seconds": 0}
    pause = step.get("pause_seconds")
    started = rollout.step_started_at or now
    elapsed = (now - started).total_seconds()
    if pause is None:  # wait for a promote by hand; keep judging meanwhile
        rollouts.rollout_observe(
            rollout=rollout,
            state=RolloutState.PAUSED,
            analysis=_coarse(rollout, analysis),
            detail=f"Step {rollout.step + 1}/{len(rollout.steps)} at {rollout.weight}%: paused until promoted",
        )
        return REQUEUE_WHILE_CANARY_S
    if elapsed >= pause and result == "pass":
        rollouts.rollout_step(rollout=rollout, step=rollout.step + 1, analysis=analysis)
        return 0.0
    left = max(0.0, pause - elapsed)
    detail = f"Step {rollout.step + 1}/{len(rollout.steps)} at {rollout.weight}%: " + (
        f"{left:.0f} s left" if left else analysis["why"]
    )
    rollouts.rollout_observe(rollout=rollout, analysis=_coarse(rollout, analysis), detail=detail[:500])
    return REQUEUE_WHILE_CANARY_S


def _coarse(rollout: Rollout, analysis: dict[str, Any]) -> dict[str, Any]:
    """The analysis as stored: unchanged counters keep the old row (and no push) between passes."""
    previous = rollout.analysis or {}
    if {k: previous.get(k) for k in ("stable", "canary", "verdict")} == {
        k: analysis.get(k) for k in ("stable", "canary", "verdict")
    }:
        return previous
    return analysis
