"""Level-triggered reconcile of one deployment: compare desired with observed, act on the difference.

One pass (``reconcile``) never blocks waiting for a replica: it claims the deployment's lease,
reads the replicas from the backend by labels, health-checks them, creates the missing ones,
removes dead, unhealthy, extra and old-generation ones (rolling: old replicas go only as new
ones turn ready), writes phase/conditions/replicas with compare-and-set and returns how soon
it wants to look again. A pass over a converged deployment creates, removes and emits nothing.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.utils import timezone

from controlplane.catalog.sources import folders_text, source_allowed
from controlplane.deployments import status
from controlplane.deployments.choices import ConditionType, DesiredState, EventType, Phase, ProgressStep, ReplicaState
from controlplane.deployments.events import event_emit
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from controlplane.deployments.replica_auth import replica_token
from controlplane.deployments.spec import replica_values
from controlplane.deployments.status import ReplicaObservation, StatusUpdate
from workers import telemetry
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


def replica_spec(deployment: Deployment, *, slot: int) -> ReplicaSpec:
    model_path = deployment.model.source
    # Checked again at every start: a folder swapped for a symlink since registration must not
    # hand a replica another tenant's files. The message names no path: it may lead anywhere.
    if not source_allowed(deployment.tenant.slug, model_path):
        raise PermanentDriverError(
            f"Model {deployment.model.name!r}: its source no longer resolves under "
            f"{folders_text(deployment.tenant.slug)}; replicas are not started from it.",
            reason="ModelSourceRefused",
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
        model_path=model_path,
        **values,
        allow_unsafe_weights=deployment.model.allow_unsafe_weights,
        trust_remote_code=deployment.model.trust_remote_code,
        token=replica_token(deployment.pk),
    )


def _slot(name: str) -> int:
    match = re.search(r"-(\d+)$", name)
    return int(match.group(1)) if match else 10_000


def _step(stage: str | None) -> ProgressStep:
    return STEPS.get(stage or "", ProgressStep.STARTING)


class Pass:
    """State of one reconcile pass over one deployment."""

    def __init__(self, deployment: Deployment, driver: Driver, owner: str) -> None:
        self.d = deployment
        self.driver = driver
        self.owner = owner
        self.now = timezone.now()
        self.actions: list[str] = []
        self._rows = {r.name: r for r in Replica.objects.filter(deployment_id=deployment.pk)}

    # ------------------------------------------------------------------ helpers

    def row(self, replica: ObservedReplica) -> Replica | None:
        """The Replica row of this very incarnation (a replacement may reuse the name)."""
        row = self._rows.get(replica.name)
        return row if row is not None and row.backend_id == replica.backend_id else None

    def renew(self) -> None:
        if not status.deployment_renew(
            deployment_id=self.d.pk, owner=self.owner, lease_seconds=settings.HANGAR_RECONCILE_LEASE_SECONDS
        ):
            raise LeaseLost()

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        event_emit(
            deployment=self.d,
            reason=reason,
            message=message,
            type=EventType.WARNING if warning else EventType.NORMAL,
            actor="system:reconciler",
        )

    def remove(self, replica: ObservedReplica, reason: str, message: str, warning: bool = False) -> None:
        self.renew()
        self.driver.remove(replica.backend_id)
        self.actions.append(f"remove {replica.name}")
        self.event(reason, message, warning)

    def create(self, slot: int) -> ObservedReplica:
        self.renew()
        spec = replica_spec(self.d, slot=slot)
        created = self.driver.create(spec)
        self.actions.append(f"create {spec.name}")
        self.event("ReplicaCreated", f"Started replica {spec.name} (generation {spec.generation})")
        return created

    def healthy(self, replicas: list[ObservedReplica]) -> dict[str, bool]:
        def check(replica: ObservedReplica) -> bool:
            if replica.ready is not None:  # the backend judges readiness itself (Kubernetes)
                return replica.ready
            return replica.state == BackendState.RUNNING and self.driver.health(replica.endpoint)

        if len(replicas) <= 1:
            return {r.name: check(r) for r in replicas}
        with ThreadPoolExecutor(max_workers=min(8, len(replicas))) as pool:
            return dict(zip([r.name for r in replicas], pool.map(check, replicas), strict=True))

    def failed_recently(self) -> bool:
        """A Failed deployment retries the same spec only every HANGAR_FAILED_RETRY_SECONDS."""
        if self.d.phase != Phase.FAILED or self.d.observed_generation != self.d.generation:
            return False
        # The last failure: when Progressing turned False, or the last warning since (a crash of
        # a retried replica), so a crash-looping replica is retried every N seconds, not every pass.
        moments = [
            datetime.fromisoformat(c["last_transition_time"])
            for c in self.d.conditions
            if c.get("type") == ConditionType.PROGRESSING and c.get("status") == "False"
        ]
        last_warning = (
            DeploymentEvent.objects.filter(deployment_id=self.d.pk, type=EventType.WARNING)
            .order_by("-created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        if last_warning is not None:
            moments.append(last_warning)
        if not moments:
            return False
        return self.now - max(moments) < timedelta(seconds=settings.HANGAR_FAILED_RETRY_SECONDS)

    # ------------------------------------------------------------------ the pass

    def run(self) -> Outcome:
        if self.d.desired_state == DesiredState.DELETED:
            return self.delete()
        if self.driver.group_managed:
            return self.run_group()
        d = self.d
        desired = d.replicas if d.desired_state == DesiredState.RUNNING else 0
        gen = d.template_generation
        actual = self.driver.list(d.pk)

        # 1. Dead replicas: note why, remove. One that died before ever being ready counts as a crash.
        crashed: list[str] = []
        alive: list[ObservedReplica] = []
        for replica in actual:
            if replica.alive:
                alive.append(replica)
                continue
            row = self.row(replica)
            last = replica.detail or self._last_line(replica)
            code = f" (exit code {replica.exit_code})" if replica.exit_code is not None else ""
            self.remove(replica, "ReplicaExited", f"Replica {replica.name} exited{code}: {last}".strip(), warning=True)
            if replica.generation == gen and not replica.never_started and (row is None or row.ready_at is None):
                crashed.append(f"Replica {replica.name} exited{code} before becoming ready: {last}".strip())

        # 2. Health: /health of every live replica; replace the ones past the threshold or timeout.
        health = self.healthy(alive)
        survivors: list[ObservedReplica] = []
        for replica in alive:
            row = self.row(replica)
            if health[replica.name]:
                survivors.append(replica)
                continue
            if row is not None and row.ready_at is not None:
                failures = row.consecutive_failures + 1
                if failures >= settings.HANGAR_HEALTH_FAILURE_THRESHOLD:
                    self.remove(
                        replica,
                        "ReplicaUnhealthy",
                        f"Replica {replica.name} failed {failures} health checks in a row; replacing it",
                        warning=True,
                    )
                    continue
            else:
                started = replica.started_at or (row.started_at if row else None) or self.now
                if self.now - started > timedelta(seconds=settings.HANGAR_READY_TIMEOUT):
                    self.remove(
                        replica,
                        "ReadyTimeout",
                        f"Replica {replica.name} was not ready within {settings.HANGAR_READY_TIMEOUT:g} s; "
                        f"last output: {self._last_line(replica)}",
                        warning=True,
                    )
                    if replica.generation == gen:
                        crashed.append(
                            f"Replica {replica.name} was not ready within {settings.HANGAR_READY_TIMEOUT:g} s"
                        )
                    continue
            survivors.append(replica)

        current = [r for r in survivors if r.generation == gen]
        old = [r for r in survivors if r.generation != gen]

        # 3. Scale the current generation to the desired count.
        failure = crashed[0] if crashed else ""
        hold = bool(crashed) or self.failed_recently()
        if len(current) < desired and not hold:
            used = {_slot(r.name) for r in current}
            free = (s for s in range(desired * 2 + 1) if s not in used)
            for _ in range(desired - len(current)):
                try:
                    current.append(self.create(next(free)))
                except PermanentDriverError as exc:
                    failure = exc.message
                    self._fail_reason = exc.reason
                    break
                health[current[-1].name] = False
        elif len(current) > desired:
            # Keep the ready ones with the lowest slots; remove the rest.
            ordered = sorted(current, key=lambda r: (not health.get(r.name, False), _slot(r.name)))
            for replica in ordered[desired:]:
                self.remove(replica, "ReplicaRemoved", f"Removed replica {replica.name}: scaled to {desired}")
            current = ordered[:desired]

        # 4. Rolling replacement: old-generation replicas go once enough new ones are ready.
        ready_current = [r for r in current if health.get(r.name)]
        keep_ready_old = max(0, desired - len(ready_current))
        old_sorted = sorted(old, key=lambda r: (not health.get(r.name, False), _slot(r.name)))
        kept_old: list[ObservedReplica] = []
        for replica in old_sorted:
            if health.get(replica.name) and len(kept_old) < keep_ready_old:
                kept_old.append(replica)
                continue
            self.remove(
                replica,
                "ReplicaReplaced",
                f"Removed replica {replica.name} of generation {replica.generation}: "
                f"generation {gen} is ready to take over",
            )

        # 5. Observed state.
        remaining = current + kept_old
        observations = []
        for replica in remaining:
            ok = bool(health.get(replica.name))
            row = self.row(replica)
            if ok and (row is None or row.ready_at is None):
                self.event("ReplicaReady", f"Replica {replica.name} is ready at {replica.endpoint}")
            observations.append(
                ReplicaObservation(
                    name=replica.name,
                    backend_id=replica.backend_id,
                    generation=replica.generation,
                    endpoint=replica.endpoint,
                    state=ReplicaState.READY
                    if ok
                    else (ReplicaState.UNHEALTHY if row is not None and row.ready_at else ReplicaState.STARTING),
                    started_at=replica.started_at,
                    healthy=ok,
                )
            )
        status.replicas_sync(deployment=d, observed=observations)

        ready = sum(1 for o in observations if o.healthy)
        converged = len(ready_current) == desired and len(current) == desired and not kept_old
        return self.report(
            desired=desired,
            ready=ready,
            converged=converged,
            rolling=bool(kept_old) or any(r.generation != gen for r in old),
            failure=failure,
            starting=[r for r in current if not health.get(r.name)],
        )

    # ------------------------------------------------------------------ status

    _fail_reason = "ReplicaCrashed"

    def report(
        self,
        *,
        desired: int,
        ready: int,
        converged: bool,
        rolling: bool,
        failure: str,
        starting: list[ObservedReplica],
        why: str = "",
    ) -> Outcome:
        d = self.d
        conditions: dict[str, tuple[bool | None, str, str]] = {
            ConditionType.BACKEND_REACHABLE: (True, "Reachable", ""),
        }
        progress: dict[str, str] | None = None
        requeue: float | None = None
        if failure:
            phase, reason, message = Phase.FAILED, self._fail_reason, failure
            conditions[ConditionType.PROGRESSING] = (False, reason, failure)
            conditions[ConditionType.READY] = (ready >= desired > 0, reason, failure)
            observed = d.generation
            progress = {"step": ProgressStep.FAILED, "detail": failure[:200]}
            requeue = settings.HANGAR_FAILED_RETRY_SECONDS
        elif d.phase == Phase.FAILED and d.observed_generation == d.generation and not converged:
            # Retrying a failed spec: stay Failed (no flapping events) until it works.
            phase, reason, message = Phase.FAILED, "", d.phase_message
            observed = d.generation
            requeue = POLL_WHILE_CONVERGING_S if starting else settings.HANGAR_FAILED_RETRY_SECONDS
        elif converged:
            observed = d.generation
            if desired == 0:
                stopped = d.desired_state == DesiredState.STOPPED
                phase = Phase.STOPPED if stopped else Phase.RUNNING
                reason = "Stopped" if stopped else "ScaledToZero"
                message = "All replicas stopped" if stopped else "Scaled to zero; the next request starts a replica"
                progress = {}
            else:
                phase, reason, message = Phase.RUNNING, "Running", f"{ready}/{desired} replicas ready"
                progress = {"step": ProgressStep.READY, "detail": message}
            conditions[ConditionType.PROGRESSING] = (True, "Complete", message)
            conditions[ConditionType.READY] = (desired > 0, reason, message)
            conditions[ConditionType.AVAILABLE] = (ready > 0, reason, message)
        else:
            observed = None
            requeue = POLL_WHILE_CONVERGING_S
            pending_spec = d.observed_generation != d.generation
            # A spec being applied is Deploying/Scaling; an applied one that lost replicas is Degraded.
            if rolling or (pending_spec and ready == 0):
                phase, reason = Phase.DEPLOYING, "Deploying"
            elif pending_spec:
                phase, reason = Phase.SCALING, "Scaling"
            else:
                phase, reason = Phase.DEGRADED, "ReplicasNotReady"
            message = f"{ready}/{desired} replicas ready"
            if rolling:
                message += f"; rolling to generation {d.template_generation}"
            if why:  # what the backend says keeps the rest from being ready
                message += f"; {why}"
            conditions[ConditionType.PROGRESSING] = (True, reason, message)
            conditions[ConditionType.READY] = (False, reason, message)
            conditions[ConditionType.AVAILABLE] = (ready > 0, reason, message)
        if starting and not failure:
            newest = max(starting, key=lambda r: r.started_at or self.now)
            stage = self.driver.stage(newest.backend_id)
            step = _step(stage.step if stage else None)
            progress = {"step": step, "detail": f"{newest.name}: {stage.detail if stage else 'starting'}"[:200]}
        status.deployment_status_write(
            deployment=d,
            owner=self.owner,
            update=StatusUpdate(
                phase=phase,
                message=message,
                reason=reason,
                ready_replicas=ready,
                observed_generation=observed,
                conditions=conditions,
                progress=progress,
            ),
        )
        return Outcome(requeue_after=requeue, actions=self.actions)

    def _last_line(self, replica: ObservedReplica) -> str:
        try:
            lines = [line for line in self.driver.logs(replica.backend_id, tail=20).splitlines() if line.strip()]
        except DriverError:
            return ""
        return lines[-1][:300] if lines else ""

    # ------------------------------------------------------------------ group-managed backends

    def run_group(self) -> Outcome:
        """Kubernetes: apply the whole spec; its controller rolls replicas; we observe and report."""
        d = self.d
        desired = d.replicas if d.desired_state == DesiredState.RUNNING else 0
        failure = ""
        try:
            self.renew()
            self.driver.apply(replica_spec(d, slot=0), desired)
        except PermanentDriverError as exc:
            failure, self._fail_reason = exc.message, exc.reason
        actual = [r for r in self.driver.list(d.pk) if r.alive]
        for _uid, type_, reason, message in self.driver.backend_events(d.pk, since=d.reconciled_at):
            self.event(reason, message, warning=type_ == "Warning")
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
            for r in actual
        ]
        for o in observations:
            row = self._rows.get(o.name)
            if o.healthy and (row is None or row.ready_at is None):
                self.event("ReplicaReady", f"Pod {o.name} is ready")
        status.replicas_sync(deployment=d, observed=observations)
        current = [r for r in actual if r.generation == d.template_generation]
        ready_current = [r for r in current if r.ready]
        old = [r for r in actual if r.generation != d.template_generation]
        converged = len(ready_current) == desired and len(current) == desired and not old
        crashed, why = self._pod_trouble(current)
        if crashed and not failure:
            failure, self._fail_reason = crashed, "CrashLoopBackOff"
        return self.report(
            desired=desired,
            ready=sum(1 for o in observations if o.healthy),
            converged=converged,
            rolling=bool(old),
            failure=failure,
            starting=[r for r in current if not r.ready],
            why=why,
        )

    def _pod_trouble(self, pods: list[ObservedReplica]) -> tuple[str, str]:
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
                row = self._rows.get(pod.name)
                text = f"Pod {pod.name} keeps crashing ({pod.restarts} restarts): {pod.detail}"[:500]
                if row is None or row.ready_at is None:
                    return text, ""
                why = why or text
            why = why or f"pod {pod.name}: {pod.detail}"[:500]
        return "", why

    # ------------------------------------------------------------------ deletion

    def delete(self) -> Outcome:
        d = self.d
        if self.driver.group_managed:
            self.renew()
            self.driver.teardown(d.pk)  # its controller removes the pods
        else:
            for replica in self.driver.list(d.pk):
                self.renew()
                self.driver.remove(replica.backend_id)
                self.actions.append(f"remove {replica.name}")
        if self.driver.list(d.pk):  # not gone yet (terminating): look again
            return Outcome(requeue_after=POLL_WHILE_DELETING_S, actions=self.actions)
        forget = getattr(self.driver, "forget", None)
        if forget is not None:
            forget(d.pk)
        status.deployment_delete_row(deployment=d, owner=self.owner)
        logger.info("deployment %s deleted after removing its replicas", d.pk)
        return Outcome(actions=self.actions)


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
        outcome = Pass(deployment, driver, owner).run()
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
