"""Level-triggered reconcile of one deployment: compare desired with observed, act on the difference.

One pass (``reconcile``) never blocks waiting for a replica: it claims the deployment's lease,
reads the replicas from the backend by labels, health-checks them, creates the missing ones,
removes dead, unhealthy, extra and old-generation ones (rolling: old replicas go only as new
ones turn ready), writes phase/conditions/replicas with compare-and-set and returns how soon
it wants to look again. A pass over a converged deployment creates, removes and emits nothing.

A pass reads as its steps (``run_replicas``): observe -> remove_dead -> check_health -> scale ->
roll -> record_replicas -> report, each a function of what the previous ones returned (frozen
dataclasses); the only changes go through the ``Actuator``, which renews the lease before each.
Backends that roll replicas themselves (Kubernetes) take ``run_group``; deletion takes ``delete``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.utils import timezone

from controlplane.deployments import status
from controlplane.deployments.choices import ConditionType, DesiredState, EventType, Phase, ProgressStep, ReplicaState
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from controlplane.deployments.replica_auth import replica_token
from controlplane.deployments.spec import replica_values
from controlplane.deployments.status import ReplicaObservation, StatusUpdate
from controlplane.gateway.holds import held_count
from workers import draining, model_store, rollout_strategy, telemetry
from workers.drivers import driver_for, instance_name
from workers.drivers.base import (
    BackendState,
    Driver,
    DriverError,
    ObservedReplica,
    PermanentDriverError,
    ReplicaSpec,
    TemporaryDriverError,
)

logger = logging.getLogger(__name__)

POLL_WHILE_CONVERGING_S = 0.25  # a pass is ~20 queries and two local HTTP calls: cheap
POLL_WHILE_DELETING_S = 1.0
# Runtime stage (``hangar-runtime: stage=...``) -> the progress step the dashboard shows.
STEPS: dict[str, ProgressStep] = {
    "starting": ProgressStep.STARTING,
    "loading_model": ProgressStep.LOADING_MODEL,
    "loaded": ProgressStep.LOADING_MODEL,
    "warming_up": ProgressStep.WARMING_UP,
    "ready": ProgressStep.READY,
    "failed": ProgressStep.FAILED,
}


class DriverFactory(Protocol):
    """``driver_for``'s shape: the driver of a target, for one tenant's replicas."""

    def __call__(self, target: Target, *, tenant_id: int | None = None) -> Driver: ...


@dataclass
class Outcome:
    """What a pass asks of its task: look again after ``requeue_after`` seconds, or retry."""

    requeue_after: float | None = None
    temporary_error: str = ""
    skipped: bool = False
    actions: list[str] = field(default_factory=list)


def replica_spec(
    deployment: Deployment, *, slot: int, placement: model_store.ModelPlacement | None = None
) -> ReplicaSpec:
    """The replica to start in ``slot``; ``placement`` is where its node holds the model
    (``model_store.model_placement``, which fetches a remote source; without it, made here
    with no driver: file sources, the worker's own cache, Kubernetes)."""
    if placement is None:
        placement = model_store.model_placement(
            deployment, None, on_progress=lambda *_: None, heartbeat=lambda: None, event=lambda *_: None
        )
    gen = deployment.template_generation
    values = replica_values(deployment)
    # The target's labels win: a deployment may narrow placement, never leave the target's pool.
    values["node_selector"] = {**values["node_selector"], **(deployment.target.node_selector or {})}
    values["tolerations"] = [*(deployment.target.tolerations or []), *values["tolerations"]]
    return ReplicaSpec(
        instance=instance_name(),
        tenant_id=deployment.tenant_id,
        deployment_id=deployment.pk,
        deployment_name=deployment.name,
        name=f"{deployment.name}-g{gen}-{slot}",
        slot=slot,
        generation=gen,
        model_path=placement.path,
        model_volume=placement.volume,
        model_fetch=placement.fetch,
        **values,
        allow_unsafe_weights=deployment.model.allow_unsafe_weights,
        trust_remote_code=deployment.model.trust_remote_code,
        task=deployment.model.task,
        pooling=deployment.model.pooling,
        token=replica_token(deployment.pk),
        faults=rollout_strategy.fault_flags(deployment),
    )


def _slot(name: str) -> int:
    match = re.search(r"-(\d+)$", name)
    return int(match.group(1)) if match else 10_000


def _step(stage: str | None) -> ProgressStep:
    return STEPS.get(stage or "", ProgressStep.STARTING)


# ------------------------------------------------------------------ what a pass sees and decides


@dataclass(frozen=True)
class Observation:
    """What a pass starts from: the desired count, the backend's replicas and the database's rows."""

    desired: int
    generation: int  # the replica template's: replicas of another one are old
    replicas: tuple[ObservedReplica, ...]
    rows: Mapping[str, Replica]  # Replica rows by name, as the last pass recorded them
    now: datetime
    leaving: tuple[ObservedReplica, ...] = ()  # on their way out (workers.draining): not in ``replicas``

    def row(self, replica: ObservedReplica) -> Replica | None:
        """The Replica row of this very incarnation (a replacement may reuse the name)."""
        row = self.rows.get(replica.name)
        return row if row is not None and row.backend_id == replica.backend_id else None

    def was_ready(self, replica: ObservedReplica) -> bool:
        row = self.row(replica)
        return row is not None and row.ready_at is not None


@dataclass(frozen=True)
class Failure:
    """Why the current spec cannot run, as the Failed phase tells it."""

    message: str
    reason: str = "ReplicaCrashed"


@dataclass(frozen=True)
class Removal:
    """An unhealthy replica's removal: its event, and the crash it counts as ("" for none)."""

    reason: str
    message: str
    crash: str = ""


@dataclass(frozen=True)
class Survivors:
    """Replicas a step left in place, with their /health and the crashes seen so far."""

    replicas: tuple[ObservedReplica, ...]
    crashed: tuple[str, ...] = ()
    healthy: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Scaled:
    """The current generation after scaling: its replicas, everyone's /health, and a failure to create."""

    current: tuple[ObservedReplica, ...]
    healthy: Mapping[str, bool]
    failure: Failure | None = None


@dataclass(frozen=True)
class Summary:
    """What the pass found, for the status write."""

    desired: int
    ready: int
    converged: bool
    rolling: bool
    failure: Failure | None
    starting: tuple[ObservedReplica, ...]
    now: datetime
    why: str = ""  # what the backend says keeps the rest from being ready
    held: int = 0  # requests the gateway holds while no replica is ready (phase Waking)


@dataclass(frozen=True)
class Plan:
    """The status write a summary calls for, and how soon to look again."""

    phase: str
    reason: str
    message: str
    observed_generation: int | None
    conditions: dict[str, tuple[bool | None, str, str]]
    progress: dict[str, str] | None = None
    requeue_after: float | None = None


@dataclass(frozen=True)
class Actuator:
    """A pass's only way to change things: renews the lease before each change, logs it, tells it in an event."""

    deployment: Deployment
    driver: Driver
    owner: str
    actions: list[str] = field(default_factory=list)
    retiring: list[ObservedReplica] = field(default_factory=list)  # to drain (workers.draining)
    placements: list[model_store.ModelPlacement] = field(default_factory=list)  # this pass's, once made

    def renew(self) -> None:
        if not status.deployment_renew(
            deployment_id=self.deployment.pk, owner=self.owner, lease_seconds=settings.HANGAR_RECONCILE_LEASE_SECONDS
        ):
            raise LeaseLost()

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        event_emit(
            deployment=self.deployment,
            reason=reason,
            message=message,
            type=EventType.WARNING if warning else EventType.NORMAL,
            actor="system:reconciler",
        )

    def discard(self, replica: ObservedReplica) -> None:
        self.renew()
        self.driver.remove(replica.backend_id)
        self.actions.append(f"remove {replica.name}")

    def remove(self, replica: ObservedReplica, reason: str, message: str, warning: bool = False) -> None:
        self.discard(replica)
        self.event(reason, message, warning)

    def download_progress(self, done: int, total: int, rate: float) -> None:
        """A model fetch's progress, live on the deployment (and a lease renewal: fetches take time)."""
        self.renew()
        mib = 1024 * 1024
        status.deployment_progress_write(
            deployment=self.deployment,
            owner=self.owner,
            progress={
                "step": ProgressStep.DOWNLOADING_MODEL,
                "detail": f"{done / mib:.1f} / {total / mib:.1f} MiB at {rate / mib:.1f} MiB/s",
                "bytes_done": str(done),
                "bytes_total": str(total),
                "rate": f"{rate:.0f}",
            },
        )

    def placement(self) -> model_store.ModelPlacement:
        """Where the replicas read the model, made ready once per pass (fetched, or verified)."""
        if not self.placements:
            self.renew()
            self.placements.append(
                model_store.model_placement(
                    self.deployment,
                    self.driver,
                    on_progress=self.download_progress,
                    heartbeat=self.renew,
                    event=lambda r, m, w: self.event(r, m, w),
                )
            )
        return self.placements[0]

    def create(self, slot: int) -> ObservedReplica:
        placement = self.placement()
        self.renew()
        spec = replica_spec(self.deployment, slot=slot, placement=placement)
        created = self.driver.create(spec)
        self.actions.append(f"create {spec.name}")
        self.event("ReplicaCreated", f"Started replica {spec.name} (generation {spec.generation})")
        return created


# ------------------------------------------------------------------ the pass, step by step


def run_pass(deployment: Deployment, driver: Driver, owner: str) -> Outcome:
    act = Actuator(deployment, driver, owner)
    if deployment.desired_state == DesiredState.DELETED:
        return delete(act)
    if driver.group_managed:
        return run_group(act)
    return run_replicas(act)


def run_replicas(act: Actuator) -> Outcome:
    """Replica-managed backends (local, Docker): the pass itself creates, checks and removes replicas."""
    judged, canary_requeue = rollout_strategy.advance(act.deployment)  # a failed canary is rolled back first
    act = dataclasses.replace(act, deployment=judged)
    seen = draining.split(observe(act.deployment, act.driver))
    leaving = draining.advance(act, seen)
    alive = remove_dead(act, seen)
    checked = check_health(act, seen, alive)
    hold = bool(checked.crashed) or failed_recently(act.deployment, seen.now)
    old = tuple(r for r in checked.replicas if r.generation != seen.generation)
    budget = rollout_strategy.budget(act.deployment, _counts(seen, checked, old))
    scaled = scale(act, seen, checked, hold=hold, target=budget.current_target)
    kept_old = roll(act, seen, scaled, old, budget)
    observations = record_replicas(act, seen, (*scaled.current, *kept_old), scaled.healthy)
    status.replicas_sync(
        deployment=act.deployment, observed=[*observations, *draining.observations((*leaving, *act.retiring))]
    )
    draining.begin(act, seen.now)
    ready_current = [r for r in scaled.current if scaled.healthy.get(r.name)]
    crash = Failure(checked.crashed[0]) if checked.crashed else None
    summary = Summary(
        desired=seen.desired,
        ready=sum(1 for o in observations if o.healthy),
        converged=len(ready_current) == seen.desired and len(scaled.current) == seen.desired and not kept_old,
        rolling=bool(old),
        failure=scaled.failure or crash,
        starting=tuple(r for r in scaled.current if not scaled.healthy.get(r.name)),
        now=seen.now,
    )
    if summary.ready == 0 and summary.desired > 0:
        summary = dataclasses.replace(summary, held=held_count(act.deployment.pk))
    rollout_strategy.finish(
        act.deployment, budget, ready_current=len(ready_current), desired=seen.desired, old_left=len(kept_old)
    )
    outcome = report(act, summary)
    if leaving or act.retiring:
        outcome.requeue_after = min(
            outcome.requeue_after or draining.POLL_WHILE_DRAINING_S, draining.POLL_WHILE_DRAINING_S
        )
    if canary_requeue is not None:
        outcome.requeue_after = min(outcome.requeue_after or canary_requeue, canary_requeue)
    return outcome


def _counts(seen: Observation, checked: Survivors, old: tuple[ObservedReplica, ...]) -> rollout_strategy.Counts:
    current = [r for r in checked.replicas if r.generation == seen.generation]
    return rollout_strategy.Counts(
        desired=seen.desired,
        current=len(current),
        current_ready=sum(1 for r in current if checked.healthy.get(r.name)),
        old_ready=sum(1 for r in old if checked.healthy.get(r.name)),
        leaving=len(seen.leaving),
        leaving_old=sum(1 for r in seen.leaving if r.generation != seen.generation),
    )


def observe(deployment: Deployment, driver: Driver) -> Observation:
    now = timezone.now()
    rows = {r.name: r for r in Replica.objects.filter(deployment_id=deployment.pk)}
    return Observation(
        desired=deployment.replicas if deployment.desired_state == DesiredState.RUNNING else 0,
        generation=deployment.template_generation,
        replicas=tuple(driver.list(deployment.pk)),
        rows=rows,
        now=now,
    )


def remove_dead(act: Actuator, seen: Observation) -> Survivors:
    """Remove the replicas that exited, saying why. One that died before ever being ready counts as a crash."""
    alive: list[ObservedReplica] = []
    crashed: list[str] = []
    for replica in seen.replicas:
        if replica.alive:
            alive.append(replica)
            continue
        last = replica.detail or _last_line(act.driver, replica)
        code = f" (exit code {replica.exit_code})" if replica.exit_code is not None else ""
        act.remove(replica, "ReplicaExited", f"Replica {replica.name} exited{code}: {last}".strip(), warning=True)
        if replica.generation == seen.generation and not replica.never_started and not seen.was_ready(replica):
            crashed.append(f"Replica {replica.name} exited{code} before becoming ready: {last}".strip())
    return Survivors(tuple(alive), tuple(crashed))


def check_health(act: Actuator, seen: Observation, alive: Survivors) -> Survivors:
    """/health of every live replica; replace the ones past the failure threshold or the ready timeout."""
    healthy = probe(act.driver, alive.replicas)
    survivors: list[ObservedReplica] = []
    crashed = list(alive.crashed)
    for replica in alive.replicas:
        removal = None if healthy[replica.name] else _removal(act.driver, seen, replica)
        if removal is None:
            survivors.append(replica)
            continue
        act.remove(replica, removal.reason, removal.message, warning=True)
        if removal.crash:
            crashed.append(removal.crash)
    return Survivors(tuple(survivors), tuple(crashed), healthy)


def probe(driver: Driver, replicas: tuple[ObservedReplica, ...]) -> dict[str, bool]:
    def check(replica: ObservedReplica) -> bool:
        if replica.ready is not None:  # the backend judges readiness itself (Kubernetes)
            return replica.ready
        return replica.state == BackendState.RUNNING and driver.health(replica.endpoint)

    if len(replicas) <= 1:
        return {r.name: check(r) for r in replicas}
    with ThreadPoolExecutor(max_workers=min(8, len(replicas))) as pool:
        return dict(zip([r.name for r in replicas], pool.map(check, replicas), strict=True))


def _removal(driver: Driver, seen: Observation, replica: ObservedReplica) -> Removal | None:
    """What an unhealthy replica has earned: removal past the failure threshold once it was ready,
    or past the ready timeout before; None while it may still recover."""
    row = seen.row(replica)
    if row is not None and row.ready_at is not None:
        failures = row.consecutive_failures + 1
        if failures < settings.HANGAR_HEALTH_FAILURE_THRESHOLD:
            return None
        return Removal(
            "ReplicaUnhealthy", f"Replica {replica.name} failed {failures} health checks in a row; replacing it"
        )
    started = replica.started_at or (row.started_at if row else None) or seen.now
    timeout = settings.HANGAR_READY_TIMEOUT
    if seen.now - started <= timedelta(seconds=timeout):
        return None
    return Removal(
        "ReadyTimeout",
        f"Replica {replica.name} was not ready within {timeout:g} s; last output: {_last_line(driver, replica)}",
        crash=f"Replica {replica.name} was not ready within {timeout:g} s"
        if replica.generation == seen.generation
        else "",
    )


def failed_recently(deployment: Deployment, now: datetime) -> bool:
    """A Failed deployment retries the same spec only every HANGAR_FAILED_RETRY_SECONDS."""
    if deployment.phase != Phase.FAILED or deployment.observed_generation != deployment.generation:
        return False
    # The last failure: when Progressing turned False, or the last warning since (a crash of
    # a retried replica), so a crash-looping replica is retried every N seconds, not every pass.
    moments = [
        datetime.fromisoformat(c["last_transition_time"])
        for c in deployment.conditions
        if c.get("type") == ConditionType.PROGRESSING and c.get("status") == "False"
    ]
    last_warning = (
        DeploymentEvent.objects.filter(deployment_id=deployment.pk, type=EventType.WARNING)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    if last_warning is not None:
        moments.append(last_warning)
    if not moments:
        return False
    return now - max(moments) < timedelta(seconds=settings.HANGAR_FAILED_RETRY_SECONDS)


def scale(act: Actuator, seen: Observation, checked: Survivors, *, hold: bool, target: int | None = None) -> Scaled:
    """Scale the current generation to ``target`` (the rollout's budget; at most the desired
    count), creating no new replicas while ``hold``."""
    current = [r for r in checked.replicas if r.generation == seen.generation]
    want = seen.desired if target is None else min(target, seen.desired)
    if len(current) < want and not hold:
        return _scale_up(act, seen, current, checked.healthy, want)
    if len(current) > seen.desired:
        return _scale_down(act, seen, current, checked.healthy)
    return Scaled(tuple(current), checked.healthy)


def _scale_up(
    act: Actuator, seen: Observation, current: list[ObservedReplica], healthy: Mapping[str, bool], want: int
) -> Scaled:
    used = {_slot(r.name) for r in (*current, *seen.leaving)}  # a leaving replica keeps its name till gone
    free = (s for s in range(seen.desired * 2 + 1 + len(used)) if s not in used)
    created: list[ObservedReplica] = []
    failure = None
    for _ in range(want - len(current)):
        try:
            created.append(act.create(next(free)))
        except PermanentDriverError as exc:
            failure = Failure(exc.message, exc.reason)
            break
    return Scaled((*current, *created), {**healthy, **{r.name: False for r in created}}, failure)


def _scale_down(
    act: Actuator, seen: Observation, current: list[ObservedReplica], healthy: Mapping[str, bool]
) -> Scaled:
    """Keep the ready ones with the lowest slots; remove the rest."""
    ordered = sorted(current, key=lambda r: (not healthy.get(r.name, False), _slot(r.name)))
    for replica in ordered[seen.desired :]:
        serving = bool(healthy.get(replica.name)) or seen.was_ready(replica)
        draining.retire(
            act,
            replica,
            serving=serving,
            reason="ReplicaRemoved",
            message=f"Removing replica {replica.name}: scaled to {seen.desired}",
        )
    return Scaled(tuple(ordered[: seen.desired]), healthy)


def roll(
    act: Actuator, seen: Observation, scaled: Scaled, old: tuple[ObservedReplica, ...], budget: rollout_strategy.Budget
) -> tuple[ObservedReplica, ...]:
    """Rolling replacement: old-generation replicas go as the budget allows (max unavailable, a
    canary's stable set); unready ones first, the stable revision's last. Returns those kept."""
    keep_ready_old = budget.keep_old
    kept: list[ObservedReplica] = []

    def order(r: ObservedReplica) -> tuple[bool, bool, int]:
        return (not scaled.healthy.get(r.name, False), r.generation != budget.stable_generation, _slot(r.name))

    for replica in sorted(old, key=order):
        if scaled.healthy.get(replica.name) and len(kept) < keep_ready_old:
            kept.append(replica)
            continue
        draining.retire(
            act,
            replica,
            serving=bool(scaled.healthy.get(replica.name)) or seen.was_ready(replica),
            reason="ReplicaReplaced",
            message=f"Replacing replica {replica.name} of revision {replica.generation}: revision "
            f"{seen.generation} takes over (max unavailable {budget.unavailable}, max surge {budget.surge})",
        )
    return tuple(kept)


def record_replicas(
    act: Actuator, seen: Observation, replicas: tuple[ObservedReplica, ...], healthy: Mapping[str, bool]
) -> list[ReplicaObservation]:
    """The replicas that remain as the pass saw them (for ``replicas_sync``); tell when one turned ready."""
    observations = []
    for replica in replicas:
        ok = bool(healthy.get(replica.name))
        was_ready = seen.was_ready(replica)
        if ok and not was_ready:
            act.event("ReplicaReady", f"Replica {replica.name} is ready at {replica.endpoint}")
        observations.append(
            ReplicaObservation(
                name=replica.name,
                backend_id=replica.backend_id,
                generation=replica.generation,
                endpoint=replica.endpoint,
                state=_replica_state(healthy=ok, was_ready=was_ready),
                started_at=replica.started_at,
                healthy=ok,
            )
        )
    return observations


def _replica_state(*, healthy: bool, was_ready: bool) -> ReplicaState:
    if healthy:
        return ReplicaState.READY
    return ReplicaState.UNHEALTHY if was_ready else ReplicaState.STARTING


# ------------------------------------------------------------------ status


def report(act: Actuator, summary: Summary) -> Outcome:
    """Write phase, conditions and progress with compare-and-set; say how soon to look again."""
    d = act.deployment
    plan = plan_status(d, summary)
    override = rollout_strategy.phase_override(d, plan.phase)
    if override is not None:
        plan = dataclasses.replace(plan, phase=override[0], reason="RolledBack", message=override[1])
    progress = plan.progress
    if summary.starting and summary.failure is None:
        progress = _starting_progress(act.driver, summary.starting, summary.now)
    status.deployment_status_write(
        deployment=d,
        owner=act.owner,
        update=StatusUpdate(
            phase=plan.phase,
            message=plan.message,
            reason=plan.reason,
            ready_replicas=summary.ready,
            observed_generation=plan.observed_generation,
            conditions=plan.conditions,
            progress=progress,
        ),
    )
    return Outcome(requeue_after=plan.requeue_after, actions=act.actions)


def plan_status(d: Deployment, summary: Summary) -> Plan:
    if summary.failure is not None:
        return _plan_failed(d, summary, summary.failure)
    if d.phase == Phase.FAILED and d.observed_generation == d.generation and not summary.converged:
        # Retrying a failed spec: stay Failed (no flapping events) until it works.
        return Plan(
            phase=Phase.FAILED,
            reason="",
            message=d.phase_message,
            observed_generation=d.generation,
            conditions=_reachable(),
            requeue_after=POLL_WHILE_CONVERGING_S if summary.starting else settings.HANGAR_FAILED_RETRY_SECONDS,
        )
    if summary.converged:
        return _plan_converged(d, summary)
    return _plan_converging(d, summary)


def _reachable() -> dict[str, tuple[bool | None, str, str]]:
    return {ConditionType.BACKEND_REACHABLE: (True, "Reachable", "")}


def _plan_failed(d: Deployment, summary: Summary, failure: Failure) -> Plan:
    reason, message = failure.reason, failure.message
    return Plan(
        phase=Phase.FAILED,
        reason=reason,
        message=message,
        observed_generation=d.generation,
        conditions={
            **_reachable(),
            ConditionType.PROGRESSING: (False, reason, message),
            ConditionType.READY: (summary.ready >= summary.desired > 0, reason, message),
        },
        progress={"step": ProgressStep.FAILED, "detail": message[:200]},
        requeue_after=settings.HANGAR_FAILED_RETRY_SECONDS,
    )


def _plan_converged(d: Deployment, summary: Summary) -> Plan:
    ready, desired = summary.ready, summary.desired
    progress: dict[str, str]
    if desired == 0:
        stopped = d.desired_state == DesiredState.STOPPED
        phase = Phase.STOPPED if stopped else Phase.RUNNING
        reason = "Stopped" if stopped else "ScaledToZero"
        message = "All replicas stopped" if stopped else "Scaled to zero; the next request starts a replica"
        progress = {}
    else:
        phase, reason, message = Phase.RUNNING, "Running", f"{ready}/{desired} replicas ready"
        progress = {"step": ProgressStep.READY, "detail": message}
    return Plan(
        phase=phase,
        reason=reason,
        message=message,
        observed_generation=d.generation,
        conditions={
            **_reachable(),
            ConditionType.PROGRESSING: (True, "Complete", message),
            ConditionType.READY: (desired > 0, reason, message),
            ConditionType.AVAILABLE: (ready > 0, reason, message),
        },
        progress=progress,
    )


def _plan_converging(d: Deployment, summary: Summary) -> Plan:
    ready, desired = summary.ready, summary.desired
    pending_spec = d.observed_generation != d.generation
    # A spec being applied is Deploying/Scaling; an applied one that lost replicas is Degraded;
    # one with requests held for its first replica (woken from zero) is Waking.
    if summary.held and ready == 0:
        phase, reason = Phase.WAKING, "Waking"
    elif summary.rolling or (pending_spec and ready == 0):
        phase, reason = Phase.DEPLOYING, "Deploying"
    elif pending_spec:
        phase, reason = Phase.SCALING, "Scaling"
    else:
        phase, reason = Phase.DEGRADED, "ReplicasNotReady"
    message = f"{ready}/{desired} replicas ready"
    if summary.held:
        message = f"{summary.held} request(s) held while a replica starts; {message}"
    if summary.rolling:
        message += f"; rolling to generation {d.template_generation}"
    if summary.why:
        message += f"; {summary.why}"
    return Plan(
        phase=phase,
        reason=reason,
        message=message,
        observed_generation=None,
        conditions={
            **_reachable(),
            ConditionType.PROGRESSING: (True, reason, message),
            ConditionType.READY: (False, reason, message),
            ConditionType.AVAILABLE: (ready > 0, reason, message),
        },
        requeue_after=POLL_WHILE_CONVERGING_S,
    )


def _starting_progress(driver: Driver, starting: tuple[ObservedReplica, ...], now: datetime) -> dict[str, str]:
    """The progress step of the newest replica on its way up, from what it last printed."""
    newest = max(starting, key=lambda r: r.started_at or now)
    stage = driver.stage(newest.backend_id)
    step = _step(stage.step if stage else None)
    return {"step": step, "detail": f"{newest.name}: {stage.detail if stage else 'starting'}"[:200]}


def _last_line(driver: Driver, replica: ObservedReplica) -> str:
    try:
        lines = [line for line in driver.logs(replica.backend_id, tail=20).splitlines() if line.strip()]
    except DriverError:
        return ""
    return lines[-1][:300] if lines else ""


# ------------------------------------------------------------------ group-managed backends


def run_group(act: Actuator) -> Outcome:
    """Kubernetes: apply the whole spec; its controller rolls replicas; we observe and report."""
    d = act.deployment
    desired = d.replicas if d.desired_state == DesiredState.RUNNING else 0
    failure = apply_group(act, desired)
    seen = observe(d, act.driver)
    alive = tuple(r for r in seen.replicas if r.alive)
    for _uid, type_, reason, message in act.driver.backend_events(d.pk, since=d.reconciled_at):
        act.event(reason, message, warning=type_ == "Warning")
    observations = record_pods(act, seen, alive)
    current = tuple(r for r in alive if r.generation == seen.generation)
    ready_current = [r for r in current if r.ready]
    old = [r for r in alive if r.generation != seen.generation]
    crashed, why = pod_trouble(seen.rows, current)
    if crashed and failure is None:
        failure = Failure(crashed, "CrashLoopBackOff")
    summary = Summary(
        desired=desired,
        ready=sum(1 for o in observations if o.healthy),
        converged=len(ready_current) == desired and len(current) == desired and not old,
        rolling=bool(old),
        failure=failure,
        starting=tuple(r for r in current if not r.ready),
        now=seen.now,
        why=why,
    )
    return report(act, summary)


def apply_group(act: Actuator, desired: int) -> Failure | None:
    try:
        act.renew()
        act.driver.apply(replica_spec(act.deployment, slot=0, placement=act.placement()), desired)
    except PermanentDriverError as exc:
        return Failure(exc.message, exc.reason)
    return None


def record_pods(act: Actuator, seen: Observation, pods: tuple[ObservedReplica, ...]) -> list[ReplicaObservation]:
    """Write the pods as the backend judges them; tell when one turned ready."""
    observations = [
        ReplicaObservation(
            name=r.name,
            backend_id=r.backend_id,
            generation=r.generation,
            endpoint=r.endpoint,
            state=ReplicaState.READY if r.ready else ReplicaState.STARTING,
            started_at=r.started_at,
            healthy=bool(r.ready),
        )
        for r in pods
    ]
    for o in observations:
        row = seen.rows.get(o.name)
        if o.healthy and (row is None or row.ready_at is None):
            act.event("ReplicaReady", f"Pod {o.name} is ready")
    status.replicas_sync(deployment=act.deployment, observed=observations)
    return observations


def pod_trouble(rows: Mapping[str, Replica], pods: tuple[ObservedReplica, ...]) -> tuple[str, str]:
    """(failure, why) from the backend's view of the unready pods of the current generation.

    A pod in a crash loop that was never ready fails the deployment (as a replica that exits
    before becoming ready does elsewhere); one that was ready before only degrades it. A pod
    the scheduler cannot place, or that waits for its image, says why it is not ready.
    """
    why = ""
    for pod in sorted(pods, key=lambda r: r.name):
        if pod.ready or not pod.detail:
            continue
        if pod.detail.startswith("CrashLoopBackOff"):
            row = rows.get(pod.name)
            text = f"Pod {pod.name} keeps crashing ({pod.restarts} restarts): {pod.detail}"[:500]
            if row is None or row.ready_at is None:
                return text, ""
            why = why or text
        why = why or f"pod {pod.name}: {pod.detail}"[:500]
    return "", why


# ------------------------------------------------------------------ deletion


def delete(act: Actuator) -> Outcome:
    """Remove every backend resource of the deployment, then its row."""
    d, driver = act.deployment, act.driver
    if driver.group_managed:
        act.renew()
        driver.teardown(d.pk)  # its controller removes the pods
    else:
        for replica in driver.list(d.pk):
            act.discard(replica)
    if driver.list(d.pk):  # not gone yet (terminating): look again
        return Outcome(requeue_after=POLL_WHILE_DELETING_S, actions=act.actions)
    forget = getattr(driver, "forget", None)
    if forget is not None:
        forget(d.pk)
    status.deployment_delete_row(deployment=d, owner=act.owner)
    logger.info("deployment %s deleted after removing its replicas", d.pk)
    return Outcome(actions=act.actions)


class LeaseLost(Exception):
    """Another worker took over this deployment (our lease expired); stop touching it."""


def reconcile(deployment_id: int, *, owner: str, driver_factory: DriverFactory = driver_for) -> Outcome:
    """One reconcile pass over one deployment. Safe to call any number of times, concurrently."""
    deployment = status.deployment_claim(
        deployment_id=deployment_id, owner=owner, lease_seconds=settings.HANGAR_RECONCILE_LEASE_SECONDS
    )
    if deployment is None:
        return Outcome(skipped=True)
    started_generation = deployment.generation
    outcome = Outcome()
    driver: Driver | None = None
    timer = telemetry.PassTimer(deployment.target.kind)
    try:
        driver = driver_factory(deployment.target, tenant_id=deployment.tenant_id)
        outcome = run_pass(deployment, driver, owner)
        timer.outcome = "converged" if outcome.requeue_after is None else "progressing"
    except LeaseLost:
        timer.outcome = "lease_lost"
        logger.warning("lost the lease of deployment %s; another worker carries on", deployment_id)
        return Outcome(skipped=True)
    except TemporaryDriverError as exc:
        timer.outcome = "temporary_error"
        _report_error(deployment, owner, exc, temporary=True)
        outcome = Outcome(temporary_error=exc.message)
    except PermanentDriverError as exc:
        timer.outcome = "permanent_error"
        _report_error(deployment, owner, exc, temporary=False)
        outcome = Outcome(requeue_after=settings.HANGAR_FAILED_RETRY_SECONDS)
    finally:
        if driver is not None:
            driver.close()
        status.deployment_release(deployment_id=deployment_id, owner=owner)
        timer.done()
    latest = Deployment.objects.filter(pk=deployment_id).values_list("generation", flat=True).first()
    if latest is not None and latest != started_generation:
        # The spec changed while we worked from the old one: look again right away.
        outcome.requeue_after = 0.0
    return outcome


def _report_error(deployment: Deployment, owner: str, exc: DriverError, *, temporary: bool) -> None:
    conditions: dict[str, tuple[bool | None, str, str]]
    if deployment.desired_state == DesiredState.DELETED:
        phase = Phase.DELETING
        conditions = {ConditionType.BACKEND_REACHABLE: (not temporary, exc.reason, exc.message)}
    elif temporary:
        phase = Phase.DEGRADED
        conditions = {ConditionType.BACKEND_REACHABLE: (False, exc.reason, exc.message)}
    else:
        phase = Phase.FAILED
        conditions = {
            ConditionType.PROGRESSING: (False, exc.reason, exc.message),
            ConditionType.READY: (False, exc.reason, exc.message),
        }
    status.deployment_status_write(
        deployment=deployment,
        owner=owner,
        update=StatusUpdate(
            phase=phase,
            message=exc.message,
            reason=exc.reason,
            ready_replicas=deployment.ready_replicas,
            observed_generation=None if temporary else deployment.generation,
            conditions=conditions,
            progress={"step": ProgressStep.FAILED, "detail": exc.message[:200]} if not temporary else None,
        ),
    )


def collect_orphans(driver: Driver) -> list[str]:
    """Remove every replica of this installation whose deployment row no longer exists."""
    removed: list[str] = []
    if driver.group_managed:
        known = driver.known_deployment_ids()
        existing = set(Deployment.objects.filter(pk__in=known).values_list("pk", flat=True))
        for deployment_id in sorted(known - existing):
            driver.teardown(deployment_id)
            removed.append(f"deployment {deployment_id}")
        return removed
    kill_strays = getattr(driver, "kill_strays", None)
    if kill_strays is not None:  # local processes that lost their state file
        removed += [f"pid {pid}" for pid in kill_strays()]
    observed = driver.list(None)
    existing = set(Deployment.objects.filter(pk__in={r.deployment_id for r in observed}).values_list("pk", flat=True))
    for replica in observed:
        if replica.deployment_id not in existing:
            driver.remove(replica.backend_id)
            removed.append(replica.name)
    if removed:
        logger.info("removed %d orphaned replica(s): %s", len(removed), ", ".join(removed))
    return removed
