"""Shapes of live data shared by the pages' first render and the websocket pushes.

The metrics scraper (``workers.metrics``) stores one deployment-level rollup row per scrape
(``replica`` empty) beside the per-replica rows; charts and the overview read the rollups.
"""

from __future__ import annotations

from typing import Any

from controlplane.deployments.models import MetricSample
from controlplane.deployments.selectors import metric_samples
from controlplane.tenancy.access import Access

CHART_FIELDS = ("tokens_per_second", "latency_p50", "latency_p95", "ttft_p50", "in_flight")


def error_rate(newer: MetricSample, older: MetricSample | None) -> float | None:
    """Share of requests that failed between two samples (None when nothing was served)."""
    if older is None:
        return None
    requests = newer.requests_total - older.requests_total
    errors = newer.errors_total - older.errors_total
    if requests <= 0 or errors < 0:
        return None
    return min(1.0, errors / requests)


def rollups(*, access: Access, deployment_id: int, limit: int = 300) -> list[MetricSample]:
    rows = metric_samples(access=access, deployment_id=deployment_id, limit=limit * 4)
    return [row for row in rows if row.replica_id is None][:limit]


def summary(*, access: Access, deployment_id: int) -> dict[str, Any]:
    """Latest tokens/s, in-flight and error rate of a deployment for the overview table."""
    rows = rollups(access=access, deployment_id=deployment_id, limit=2)
    if not rows:
        return {"tokens_per_second": None, "error_rate": None, "in_flight": None}
    newest = rows[0]
    return {
        "tokens_per_second": newest.tokens_per_second,
        "in_flight": newest.in_flight,
        "error_rate": error_rate(newest, rows[1] if len(rows) > 1 else None),
    }


def chart_series(*, access: Access, deployment_id: int) -> dict[str, list[Any]]:
    """Column-oriented series for uPlot: ``{"ts": [...epoch s], "tokens_per_second": [...], ...}``."""
    rows = list(reversed(rollups(access=access, deployment_id=deployment_id)))
    series: dict[str, list[Any]] = {"ts": [row.ts.timestamp() for row in rows]}
    for field in CHART_FIELDS:
        series[field] = [getattr(row, field) for row in rows]
    return series
