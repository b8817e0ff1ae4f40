"""Celery tasks: thin wrappers that take ids and call the reconciler, health checks and autoscaler.

Task names are part of the contract with the control plane, which enqueues them by name
(``controlplane.core.tasks``): ``workers.tasks.reconcile_deployment(deployment_id)`` and
``workers.tasks.check_target(target_id)``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.core.cache import cache

from controlplane.core.tasks import CHECK_TARGET, RECONCILE_DEPLOYMENT
from controlplane.deployments.choices import Phase, TargetKind
from controlplane.deployments.models import Deployment, Target
from controlplane.deployments.status import target_health_write
from workers import reconciler
from workers.drivers import driver_for, instance_name, local_driver
from workers.drivers.base import Driver, DriverError
from workers.drivers.health import Reason, report

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
RESYNC_DEPLOYMENTS = "workers.tasks.resync_deployments"
COLLECT_ORPHANS = "workers.tasks.collect_orphans"
CHECK_TARGETS = "workers.tasks.check_targets"
AUTOSCALE = "workers.tasks.autoscale"


def _owner(task: Any) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{task.request.id or 'local'}"


def _follow_up_key(deployment_id: int) -> str:
    return f"reconcile-follow-up:{instance_name()}:{deployment_id}"


def _schedule_follow_up(deployment_id: int, countdown: float, attempt: int = 0) -> None:
    """At most one scheduled follow-up per deployment, however many passes ask for one.

    Passes started by beat, by services and by follow-ups all want to look again while a
    deployment converges; without this guard every resync would start one more polling chain.
    """
    if countdown <= 0:  # the spec changed during the pass: look again now, whatever is scheduled
        reconcile_deployment.delay(deployment_id)
    elif cache.add(_follow_up_key(deployment_id), "1", timeout=int(countdown) + 10):
        reconcile_deployment.apply_async(
            args=[deployment_id], kwargs={"follow_up": True, "attempt": attempt}, countdown=countdown
        )


@shared_task(name=RECONCILE_DEPLOYMENT, bind=True, ignore_result=True)
def reconcile_deployment(self: Any, deployment_id: int, follow_up: bool = False, attempt: int = 0) -> None:
    """One reconcile pass; looks again while replicas converge, backs off on backend errors."""
    deployment_id = int(deployment_id)
    if follow_up:
        cache.delete(_follow_up_key(deployment_id))
    outcome = reconciler.reconcile(deployment_id, owner=_owner(self))
    if outcome.temporary_error:
        # 1, 2, 4 ... 30 s between tries while the backend is unreachable (beat keeps trying too).
        _schedule_follow_up(deployment_id, min(MAX_BACKOFF_S, 2.0**attempt), attempt=attempt + 1)
    elif outcome.requeue_after is not None:
        _schedule_follow_up(deployment_id, outcome.requeue_after)


@shared_task(name=CHECK_TARGET, ignore_result=True)
def check_target(target_id: int, requested_by: str = "") -> None:
    """Refresh ``Target.health``: status, a short fixed reason, version, capacity (never raises
    on backend errors, never stores what the backend said). Audited when ``requested_by`` (who
    asked) is set or the status changed."""
    target = Target.objects.filter(pk=int(target_id)).first()
    if target is None:
        return
    try:
        driver = driver_for(target)
    except DriverError as exc:  # settings refused before any network call
        health = report(exc.cause or Reason.UNEXPECTED)
    else:
        try:
            health = driver.check()
        except DriverError as exc:
            health = report(exc.cause or Reason.UNEXPECTED)
        finally:
            driver.close()
    if not health.get("gpus") and target.gpu_inventory:
        health["gpus_declared"] = len(target.gpu_inventory)
    target_health_write(target_id=target.pk, health=health, requested_by=str(requested_by))
    if health.get("reachable"):
        # Deployments waiting out a backend outage need not wait for their next backoff step.
        for deployment_id in target.deployments.filter(phase=Phase.DEGRADED).values_list("pk", flat=True):
            reconcile_deployment.delay(deployment_id)


@shared_task(name=RESYNC_DEPLOYMENTS, ignore_result=True)
def resync_deployments() -> int:
    """Beat: re-enqueue every deployment, so lost messages, dead workers and dead replicas heal."""
    ids = list(Deployment.objects.values_list("pk", flat=True))
    for deployment_id in ids:
        reconcile_deployment.delay(deployment_id)
    return len(ids)


@shared_task(name=CHECK_TARGETS, ignore_result=True)
def check_targets() -> None:
    for target_id in Target.objects.values_list("pk", flat=True):
        check_target.delay(target_id)


@shared_task(name=COLLECT_ORPHANS, ignore_result=True)
def collect_orphans() -> int:
    """Beat: remove backend resources whose deployment row is gone, on every distinct backend."""
    removed = 0
    drivers: list[Driver] = [local_driver()]
    seen: set[tuple[object, ...]] = set()
    for target in Target.objects.exclude(kind="local").prefetch_related("grants"):
        # On Kubernetes every granted tenant may have a namespace of its own.
        tenants: list[int | None] = [None]
        if target.kind == TargetKind.KUBERNETES:
            tenants += [g.tenant_id for g in target.grants.all() if g.namespace]
        for tenant_id in tenants:
            try:
                driver = driver_for(target, tenant_id=tenant_id)
            except DriverError as exc:
                logger.warning("skipping orphan collection on target %s: %s", target.pk, exc.message)
                continue
            key = _backend_key(target, driver)
            if key in seen:
                driver.close()
            else:
                seen.add(key)
                drivers.append(driver)
    for driver in drivers:
        try:
            removed += len(reconciler.collect_orphans(driver))
        except DriverError as exc:
            logger.warning("orphan collection failed on a %s backend: %s", driver.kind, exc)
        finally:
            driver.close()
    return removed


def _backend_key(target: Target, driver: Driver) -> tuple[object, ...]:
    """What tells two backends apart: the daemon, or the cluster credentials and namespace."""
    if target.kind == TargetKind.DOCKER:
        return (target.kind, getattr(driver, "url", target.docker_url))
    return (target.kind, target.kube_auth, target.credentials, target.kube_context, getattr(driver, "namespace", ""))


@shared_task(name=AUTOSCALE, ignore_result=True)
def autoscale() -> None:
    from workers.autoscaler import autoscale_tick

    autoscale_tick()


@worker_ready.connect
def _collect_orphans_at_start(**_: Any) -> None:
    """A worker (re)starting cleans up after a crashed predecessor, resyncs everything and starts
    the watchers that reconcile a deployment as soon as one of its replicas dies."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return
    collect_orphans.delay()
    resync_deployments.delay()
    from workers import watch

    watch.start(watch.debounce(lambda deployment_id: reconcile_deployment.delay(deployment_id)))
