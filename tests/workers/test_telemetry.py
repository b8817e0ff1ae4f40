"""Reconcile passes are timed and counted by driver kind and outcome."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.workers.fakes import FakeDriver, permanent, temporary

pytestmark = pytest.mark.django_db


def passes(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("hangar_reconcile_passes_total", {"kind": kind, "outcome": outcome}) or 0.0


def timed(kind: str) -> float:
    return REGISTRY.get_sample_value("hangar_reconcile_duration_seconds_count", {"kind": kind}) or 0.0


def test_each_pass_is_counted_with_its_outcome(run: Any, deployment: Any, fake_driver: FakeDriver) -> None:
    kind = deployment.target.kind
    before = {o: passes(kind, o) for o in ("progressing", "converged", "temporary_error", "permanent_error")}
    durations = timed(kind)

    run(deployment)  # creates replicas: it wants to look again soon
    assert passes(kind, "progressing") == before["progressing"] + 1
    fake_driver.make_all_ready()
    run(deployment)
    run(deployment)  # nothing left to do
    assert passes(kind, "converged") >= before["converged"] + 1

    fake_driver.fail_with = temporary()
    run(deployment)
    assert passes(kind, "temporary_error") == before["temporary_error"] + 1
    fake_driver.fail_with = permanent()
    run(deployment)
    assert passes(kind, "permanent_error") == before["permanent_error"] + 1
    assert timed(kind) == durations + 5
