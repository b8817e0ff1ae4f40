"""Celery task of the metrics scraper (beat runs it every ``HANGAR_METRICS_INTERVAL`` seconds)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from workers import metrics


@shared_task(name="workers.metrics_tasks.scrape_metrics", ignore_result=True, acks_late=False)
def scrape_metrics() -> dict[str, Any] | None:
    # Not acks_late: a pass lost with its worker is simply replaced by the next one.
    return metrics.scrape_with_lock()
