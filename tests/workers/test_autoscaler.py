"""The autoscaler: its decision as a pure function over a window of samples (hypothesis: bounds,
panic scale-up, stabilized scale-down, never flapping), and the tick against the database."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.audit.models import AuditLog
from controlplane.deployments.models import DeploymentEvent
from tests.factories import DeploymentFactory, ReplicaFactory
from workers.autoscaler import Memory, Policy, Sample, autoscale_tick, decide

POLICY = Policy(
    target=8, min_replicas=1, max_replicas=6, stable_window=20, panic_window=4, scale_down_delay=30, tolerance=0.1
)


def run(
    policy: Policy, loads: list[float], *, start: int = 1, step: float = 1.0, idle_for: float | None = 0.0
) -> list[int]:
    """Replica counts tick by tick, one load sample per tick, as the tick applies them."""
    memory, current, counts = Memory(), start, []
    for i, load in enumerate(loads):
        decision = decide(policy, memory, Sample(at=1000.0 + i * step, load=load), current=current, idle_for=idle_for)
        memory, current = decision.memory, decision.replicas
        counts.append(current)
    return counts


def changes(counts: list[int], start: int) -> list[tuple[int, int]]:
    """(tick, +1 or -1) for every change of direction-bearing move."""
    moves, previous = [], start
    for i, count in enumerate(counts):
        if count != previous:
            moves.append((i, 1 if count > previous else -1))
        previous = count
    return moves


loads = st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), min_size=1, max_size=120)
policies = st.builds(
    Policy,
    target=st.integers(1, 16).map(float),
    min_replicas=st.integers(0, 3),
    max_replicas=st.integers(3, 12),
    stable_window=st.integers(4, 60).map(float),
    panic_window=st.integers(1, 4).map(float),
    panic_threshold=st.floats(1.1, 4.0),
    scale_down_delay=st.integers(0, 60).map(float),
    tolerance=st.floats(0.0, 0.5),
)


@settings(max_examples=300, deadline=None)
@given(policy=policies, series=loads, start=st.integers(1, 3))
def test_counts_stay_within_bounds(policy: Policy, series: list[float], start: int) -> None:
    for count in run(policy, series, start=start):
        assert policy.floor <= count <= policy.max_replicas or count == start


@settings(max_examples=300, deadline=None)
@given(policy=policies, series=loads, start=st.integers(1, 3))
def test_never_scales_down_within_the_stabilization_window_of_a_scale_up(
    policy: Policy, series: list[float], start: int
) -> None:
    moves = changes(run(policy, series, start=start), start)
    for (up_at, up), (down_at, down) in itertools.pairwise(moves):
        if up > 0 and down < 0:
            assert down_at - up_at >= policy.scale_down_delay, moves


@settings(max_examples=300, deadline=None)
@given(policy=policies, load=st.floats(0, 200, allow_nan=False), start=st.integers(1, 6), ticks=st.integers(1, 150))
def test_a_steady_load_moves_the_count_one_way_only(policy: Policy, load: float, start: int, ticks: int) -> None:
    directions = {d for _, d in changes(run(policy, [load] * ticks, start=start), start)}
    assert len(directions) <= 1


@settings(max_examples=300, deadline=None)
@given(policy=policies, base=st.floats(0, 4, allow_nan=False), factor=st.floats(1.0, 5.0))
def test_a_burst_scales_up_within_the_panic_window(policy: Policy, base: float, factor: float) -> None:
    """A burst past the panic threshold of the most replicas allowed reaches them within the panic
    window, whatever the stable window did meanwhile."""
    burst = factor * policy.panic_threshold * policy.target * policy.max_replicas
    ticks = int(policy.panic_window)
    counts = run(policy, [base] * 60 + [burst] * ticks, start=policy.floor)
    assert counts[-1] == policy.max_replicas, counts[-ticks - 1 :]


def test_load_at_the_target_within_tolerance_changes_nothing() -> None:
    assert run(POLICY, [8.5] * 40, start=1) == [1] * 40  # 6% above the target of one replica
    assert run(POLICY, [16.5] * 40, start=2) == [2] * 40


def test_a_lull_scales_down_only_after_the_stabilization_window() -> None:
    counts = run(POLICY, [40.0] * 40 + [0.0] * 80, start=1)
    assert counts[3] == 5  # the burst: up in the panic window
    assert max(counts) == 5
    lull_from = 40
    down = next(i for i, c in enumerate(counts) if i > lull_from and c < 5)
    assert down - lull_from >= POLICY.scale_down_delay
    assert counts[-1] == 1


def test_scale_to_zero_after_idle_and_a_held_request_is_load() -> None:
    policy = Policy(target=8, min_replicas=1, max_replicas=2, stable_window=10, scale_down_delay=5, idle_to_zero=30)
    assert run(policy, [0.0] * 12, start=1, idle_for=31) == [0] * 12
    assert run(policy, [0.0] * 12, start=1, idle_for=10) == [1] * 12  # a recent request: not idle
    # Woken by the gateway (1 replica), 20 requests held while it starts: load for 3 replicas.
    assert run(policy, [20.0] * 3, start=1, idle_for=0)[-1] == 2  # max_replicas


# ------------------------------------------------------------------ the tick (database, Redis cache)


def sample(replica: Any, *, in_flight: float, queued: float = 0, age_s: float = 1) -> None:
    from controlplane.deployments.models import MetricSample

    MetricSample.objects.create(
        tenant_id=replica.tenant_id,
        deployment_id=replica.deployment_id,
        replica=replica,
        ts=timezone.now() - timedelta(seconds=age_s),
        in_flight=in_flight,
        queued=queued,
    )


@pytest.mark.django_db
def test_tick_scales_from_latest_samples_and_records_it_once(private_redis_namespace: None) -> None:
    d = DeploymentFactory(
        autoscale=True, replicas=1, min_replicas=1, max_replicas=4, target_concurrency=4, autoscale_panic_seconds=2
    )
    a = ReplicaFactory(deployment=d, tenant=d.tenant)
    b = ReplicaFactory(deployment=d, tenant=d.tenant)
    sample(a, in_flight=1, age_s=5)  # older sample of a: ignored
    sample(a, in_flight=6, queued=2)
    sample(b, in_flight=3)
    untouched = DeploymentFactory(autoscale=False, replicas=1, max_replicas=4)

    assert autoscale_tick() == {d.pk: 3}  # (6 + 2 + 3) / 4 -> 3: over 200% of one replica's target
    d.refresh_from_db()
    assert d.replicas == 3
    event = DeploymentEvent.objects.filter(deployment=d, reason="Scaled").get()
    assert event.actor == "system:autoscaler"
    assert "panic" in event.message
    untouched.refresh_from_db()
    assert untouched.replicas == 1
    assert autoscale_tick() == {}  # same load: nothing more to do, no event, no audit row
    assert autoscale_tick() == {}
    assert DeploymentEvent.objects.filter(deployment=d, reason="Scaled").count() == 1
    assert AuditLog.objects.filter(action="deployment.scale").count() == 1


@pytest.mark.django_db
def test_tunables_default_to_settings(settings: Any) -> None:
    from workers.autoscaler import policy_for

    settings.HANGAR_AUTOSCALE_STABLE_WINDOW_SECONDS = 42.0
    d = DeploymentFactory.build(autoscale=True, autoscale_panic_seconds=3)
    policy = policy_for(d)
    assert policy.stable_window == 42.0 and policy.panic_window == 3.0
