"""The periodic work of the deployment engine, installed as Celery beat's schedule."""

from __future__ import annotations

from typing import Any

from django.conf import settings

ORPHANS_EVERY_S = 60.0
TARGETS_EVERY_S = 60.0
AUTOSCALE_EVERY_S = 2.0  # a tick is one sample of the panic window (default 6 s)


def beat_schedule() -> dict[str, dict[str, Any]]:
    """Resync every deployment every ``HANGAR_RESYNC_INTERVAL`` s, plus orphans, targets, autoscaler, metrics."""
    resync = settings.HANGAR_RESYNC_INTERVAL
    return {
        "hangar-resync-deployments": {"task": "workers.tasks.resync_deployments", "schedule": resync},
        "hangar-collect-orphans": {"task": "workers.tasks.collect_orphans", "schedule": max(resync, ORPHANS_EVERY_S)},
        "hangar-check-targets": {"task": "workers.tasks.check_targets", "schedule": TARGETS_EVERY_S},
        "hangar-autoscale": {"task": "workers.tasks.autoscale", "schedule": min(resync, AUTOSCALE_EVERY_S)},
        # A scrape that waited longer than one interval is stale: drop it, the next one is due.
        "hangar-scrape-metrics": {
            "task": "workers.metrics_tasks.scrape_metrics",
            "schedule": settings.HANGAR_METRICS_INTERVAL,
            "options": {"expires": settings.HANGAR_METRICS_INTERVAL},
        },
    }
