"""Hangar's background side: the deployment engine (Celery tasks, reconciler, backend drivers).

Entry points other packages use:

* ``workers.tasks.reconcile_deployment(deployment_id)`` and ``workers.tasks.check_target(target_id)``
  — enqueued *by name* from ``controlplane.core.tasks`` after commit;
* ``workers.logs.replica_logs(*, access, replica_id, tail)`` — a replica's log tail, tenant-scoped;
* ``workers.schedule.beat_schedule()`` — periodic resync, orphan collection, target checks, autoscaler.

Observed state is written only through ``controlplane.deployments.status`` (compare-and-set on
the reconcile lease). ``workers.runtime`` is the model server itself and imports none of this.
"""
