"""Autoscaler with memory: a beat tick that sets ``replicas`` of autoscaled deployments from load.

The decision (``decide``) is a pure function of the policy, the memory of past ticks and the
newest load sample, after Knative's KPA and Kubernetes' HPA:

* **Load** is what the replicas have in flight and queued (newest fresh ``MetricSample`` of each
  replica) plus the requests the gateway holds while a replica starts (``holds``).
* **Stable window** (KPA, default 60 s): the replica count follows the load averaged over it,
  ``ceil(load / target_concurrency)``, unless within the **tolerance** band (HPA, default 10%)
  of what the current replicas are meant to carry.
* **Panic window** (KPA, default 6 s): when the load averaged over this short window reaches
  ``panic_threshold`` (200%) of what the current replicas are meant to carry, scale up to it at
  once and never down until a whole stable window has passed without panic.
* **Scale-down stabilization** (HPA, default 300 s): scale down only to the highest count
  recommended over this window, and only once the memory is that old (a lost memory, which lives
  in Redis, waits a window again rather than scale down on a partial view). Scale-ups are
  immediate. So a replica count never goes down within that window of going up: no flapping.
* **Scale to zero**: no request for ``scale_to_zero_idle_seconds`` and no load in the stable
  window; the gateway wakes the deployment (``controlplane.gateway.services.deployment_wake``).
* **Bounds and quota**: ``[max(min_replicas, 1), max_replicas]``. An autoscaled deployment is
  charged at ``max_replicas`` when admitted (``controlplane.deployments.quota``), and every change
  still goes through ``deployment_scale``'s admission; the scale event and audit row are written
  only when the count changes.

The tunables are per deployment (``autoscale_*`` spec fields) with defaults from the
``HANGAR_AUTOSCALE_*`` settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Max
from django.utils import timezone

from controlplane.core.context import Actor
from controlplane.core.exceptions import DomainError
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment, MetricSample
from controlplane.deployments.services import deployment_scale
from controlplane.gateway.holds import held_count

logger = logging.getLogger(__name__)

AUTOSCALER = Actor(user=None, via="autoscaler")
MEMORY_KEY = "autoscaler:memory:{}"


@dataclass(frozen=True)
class Policy:
    """A deployment's autoscaling tunables, resolved (per-deployment value or setting)."""

    target: float  # load one replica is meant to carry
    min_replicas: int
    max_replicas: int
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    scale_down_delay: float = 300.0
    tolerance: float = 0.1
    idle_to_zero: float = 0.0  # 0: never scale to zero

    @property
    def floor(self) -> int:
        return max(self.min_replicas, 1)

    def clamp(self, replicas: int) -> int:
        # max_replicas is what the quota charged at admission: never above it (see the docstring).
        return min(max(self.floor, replicas), self.max_replicas)  # max wins, even over a min above it


@dataclass(frozen=True)
class Sample:
    at: float  # seconds (epoch)
    load: float  # in flight + queued at the replicas + held at the gateway


@dataclass(frozen=True)
class Memory:
    """What the autoscaler remembers of a deployment between ticks."""

    since: float | None = None  # first tick remembered
    samples: tuple[Sample, ...] = ()  # within the stable window
    recommendations: tuple[tuple[float, int], ...] = ()  # (at, replicas) within the scale-down window
    panic_until: float = 0.0


@dataclass(frozen=True)
class Decision:
    replicas: int
    memory: Memory
    reason: str  # why the count is what it is, for the scale event


def _mean(samples: list[Sample]) -> float:
    return sum(s.load for s in samples) / len(samples) if samples else 0.0


def decide(policy: Policy, memory: Memory, sample: Sample, *, current: int, idle_for: float | None) -> Decision:
    """The replica count for this tick, and the memory to keep. ``idle_for``: seconds since the
    last request (``None``: never had one)."""
    now = sample.at
    horizon = max(policy.stable_window, policy.panic_window)
    samples = [s for s in (*memory.samples, sample) if s.at > now - horizon]
    stable = _mean([s for s in samples if s.at > now - policy.stable_window])
    burst = _mean([s for s in samples if s.at > now - policy.panic_window])
    since = now if memory.since is None else memory.since
    panic_until = memory.panic_until
    if current > 0 and burst >= policy.panic_threshold * policy.target * current:
        panic_until = now + policy.stable_window

    want, reason = _stable_count(policy, stable, current)
    if now < panic_until:
        panic_want = policy.clamp(math.ceil(burst / policy.target))
        if panic_want >= want:
            reason = f"panic: {burst:.1f} in flight over {policy.panic_window:g} s"
        want = max(want, panic_want, current)  # no scale-down while panicking
    # Never asked: idle since the autoscaler first saw it (a new deployment gets its grace too).
    if _idle(policy, samples, now - since if idle_for is None else idle_for):
        want, reason = 0, f"no request for {policy.idle_to_zero:g} s"
    recommendations = tuple(
        r for r in (*memory.recommendations, (now, want)) if r[0] > now - policy.scale_down_delay
    ) or ((now, want),)
    if 0 < want < current:
        want, reason = _stabilized(policy, recommendations, want, current, now - since, reason)
    if want > policy.max_replicas:  # what the quota charged: never above it, not even for a while
        want, reason = policy.max_replicas, f"max_replicas is {policy.max_replicas}"
    kept = Memory(since=since, samples=tuple(samples), recommendations=recommendations, panic_until=panic_until)
    return Decision(replicas=want, memory=kept, reason=reason)


def _stable_count(policy: Policy, stable: float, current: int) -> tuple[int, str]:
    if current > 0 and abs(stable / (policy.target * current) - 1.0) <= policy.tolerance:
        return policy.clamp(current), f"{stable:.1f} in flight is within {policy.tolerance:.0%} of the target"
    return (
        policy.clamp(math.ceil(stable / policy.target)),
        f"{stable:.1f} in flight over {policy.stable_window:g} s at {policy.target:g} per replica",
    )


def _idle(policy: Policy, samples: list[Sample], idle_for: float) -> bool:
    if not policy.idle_to_zero or any(s.load > 0 for s in samples):
        return False
    return idle_for >= policy.idle_to_zero


def _stabilized(
    policy: Policy, recommendations: tuple[tuple[float, int], ...], want: int, current: int, age: float, reason: str
) -> tuple[int, str]:
    """Scale down only to the highest recommendation of the window, and only with a full window."""
    if age < policy.scale_down_delay:
        return current, f"scale-down waits for {policy.scale_down_delay:g} s of history"
    highest = max(r for _, r in recommendations)
    if highest >= current:
        return current, f"scale-down stabilization: {highest} asked within {policy.scale_down_delay:g} s"
    return max(want, highest), reason


# ------------------------------------------------------------------ the tick (database, Redis)


def policy_for(deployment: Deployment) -> Policy:
    def pick(value: float | None, default: float) -> float:
        return float(default if value is None else value)

    return Policy(
        target=float(max(deployment.target_concurrency, 1)),
        min_replicas=deployment.min_replicas,
        max_replicas=deployment.max_replicas,
        stable_window=pick(deployment.autoscale_stable_seconds, settings.HANGAR_AUTOSCALE_STABLE_WINDOW_SECONDS),
        panic_window=pick(deployment.autoscale_panic_seconds, settings.HANGAR_AUTOSCALE_PANIC_WINDOW_SECONDS),
        panic_threshold=pick(deployment.autoscale_panic_threshold, settings.HANGAR_AUTOSCALE_PANIC_THRESHOLD),
        scale_down_delay=pick(
            deployment.autoscale_scale_down_delay_seconds, settings.HANGAR_AUTOSCALE_SCALE_DOWN_DELAY_SECONDS
        ),
        tolerance=pick(deployment.autoscale_tolerance, settings.HANGAR_AUTOSCALE_TOLERANCE),
        idle_to_zero=float(deployment.scale_to_zero_idle_seconds or 0),
    )


def current_load(deployment: Deployment, *, now: datetime) -> float:
    """In-flight + queued requests summed over the newest sample of each replica (fresh ones only),
    plus the requests gateways hold for it."""
    fresh_after = now - timedelta(seconds=max(10.0, 3 * settings.HANGAR_METRICS_INTERVAL))
    latest = (
        MetricSample.objects.filter(deployment_id=deployment.pk, ts__gte=fresh_after, replica__isnull=False)
        .values("replica_id")
        .annotate(ts=Max("ts"))
    )
    load = 0.0
    for row in latest:
        sample = MetricSample.objects.filter(replica_id=row["replica_id"], ts=row["ts"]).first()
        if sample is not None:
            load += sample.in_flight + sample.queued
    return load + held_count(deployment.pk)


def memory_load(deployment_id: int) -> Memory:
    raw = cache.get(MEMORY_KEY.format(deployment_id))
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
        if not isinstance(data, dict):
            return Memory()
        return Memory(
            since=float(data["since"]) if data.get("since") is not None else None,
            samples=tuple(Sample(at=float(a), load=float(v)) for a, v in data["samples"]),
            recommendations=tuple((float(a), int(r)) for a, r in data["recommendations"]),
            panic_until=float(data.get("panic_until", 0.0)),
        )
    except (ValueError, KeyError, TypeError):
        return Memory()  # unreadable: start over (no scale-down for a window)


def memory_save(deployment_id: int, memory: Memory, policy: Policy) -> None:
    data = dataclasses.asdict(memory)
    data["samples"] = [[s.at, s.load] for s in memory.samples]
    ttl = int(max(policy.stable_window, policy.panic_window, policy.scale_down_delay)) + 60
    cache.set(MEMORY_KEY.format(deployment_id), json.dumps(data), timeout=ttl)


def autoscale_deployment(deployment: Deployment, *, now: datetime) -> int | None:
    """One tick for one deployment; returns the new replica count if it changed."""
    policy = policy_for(deployment)
    idle_for = (now - deployment.last_request_at).total_seconds() if deployment.last_request_at else None
    sample = Sample(at=now.timestamp(), load=current_load(deployment, now=now))
    decision = decide(policy, memory_load(deployment.pk), sample, current=deployment.replicas, idle_for=idle_for)
    memory_save(deployment.pk, decision.memory, policy)
    if decision.replicas == deployment.replicas:
        return None
    try:
        deployment_scale(actor=AUTOSCALER, deployment=deployment, replicas=decision.replicas, why=decision.reason)
    except DomainError as exc:
        logger.warning(
            "autoscaler could not scale deployment %s to %s: %s", deployment.pk, decision.replicas, exc.message
        )
        return None
    return decision.replicas


def autoscale_tick() -> dict[int, int]:
    """Apply the policy to every autoscaled, running deployment; returns {deployment id: new replicas}."""
    now = timezone.now()
    changed: dict[int, int] = {}
    for deployment in Deployment.objects.filter(autoscale=True, desired_state=DesiredState.RUNNING):
        replicas = autoscale_deployment(deployment, now=now)
        if replicas is not None:
            changed[deployment.pk] = replicas
    return changed
