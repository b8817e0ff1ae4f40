"""Rolling updates within max surge / max unavailable, and canary passes, on the fake driver
(issue 13 items 3 and 4). The analysis reads real Redis counters, written the way the gateway does."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings

from controlplane.core.context import SYSTEM
from controlplane.deployments import rollouts, services
from controlplane.deployments.choices import Phase, RolloutState
from controlplane.deployments.models import Deployment, Rollout
from tests.factories import DeploymentFactory, TargetFactory
from tests.workers.fakes import FakeDriver
from workers.rollout_strategy import Side, verdict

pytestmark = pytest.mark.django_db


def converge(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    fake_driver.auto_ready = True
    run(deployment)
    run(deployment)
    fake_driver.auto_ready = False


def alive(fake_driver: FakeDriver, deployment: Any) -> list[Any]:
    return fake_driver.list(deployment.pk)


def test_surge_0_unavailable_1_replaces_in_place(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    """What a full GPU node allows: never more replicas than asked, at most one fewer ready."""
    converge(deployment, fake_driver, run)
    rollouts.rollout_policy_set(actor=SYSTEM, deployment=deployment, data={"max_surge": "0", "max_unavailable": "1"})
    services.deployment_restart(actor=SYSTEM, deployment=deployment)
    deployment.refresh_from_db()
    for _ in range(12):
        run(deployment)
        replicas = alive(fake_driver, deployment)
        assert len(replicas) <= 2
        ready = [r for r in replicas if r.backend_id in fake_driver.healthy]
        assert len(ready) >= 1
        fake_driver.make_all_ready()  # the new ones come up between passes
    assert sorted(r.generation for r in alive(fake_driver, deployment)) == [2, 2]
    assert Rollout.objects.get(deployment=deployment).state == RolloutState.COMPLETED


def test_default_budget_fits_the_free_gpus() -> None:
    target = TargetFactory(gpu_inventory=[{"index": i} for i in range(2)])
    d = DeploymentFactory(target=target, gpus=1, replicas=2, max_replicas=2)
    # Both GPUs of the target are in use: replace in place.
    assert rollouts.budget(d, rollouts.policy_of(d), 2) == rollouts.Budget(max_surge=0, max_unavailable=1)
    Deployment.objects.filter(pk=d.pk).update(replicas=1)
    # One GPU free: one extra replica at a time, none unavailable.
    assert rollouts.budget(d, rollouts.policy_of(d), 1) == rollouts.Budget(max_surge=1, max_unavailable=0)
    d.tenant.quota_gpus = 1  # but the tenant's quota has no room left
    d.tenant.save()
    assert rollouts.budget(d, rollouts.policy_of(d), 1) == rollouts.Budget(max_surge=0, max_unavailable=1)
    cpu = DeploymentFactory(replicas=4)
    policy = rollouts.RolloutPolicy(deployment=cpu, max_surge="25%", max_unavailable="50%")
    assert rollouts.budget(cpu, policy, 4) == rollouts.Budget(max_surge=1, max_unavailable=2)


def _write(rollout_id: int, side: str, requests: int, errors: int) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = rollouts.stats_key(rollout_id, side)
    client.delete(key)
    client.hset(key, mapping={"n": requests, "e": errors, "l2": requests})


def test_a_canary_keeps_stable_whole_and_is_rolled_back_on_errors(
    deployment: Any, fake_driver: FakeDriver, run: Any
) -> None:
    converge(deployment, fake_driver, run)
    stable = {r.backend_id for r in alive(fake_driver, deployment)}
    rollouts.rollout_policy_set(
        actor=SYSTEM,
        deployment=deployment,
        data={"strategy": "canary", "steps": [{"weight": 10, "pause_seconds": 0}, {"weight": 100}],
              "analysis": {"min_requests": 20}},
    )  # fmt: skip
    Deployment.objects.filter(pk=deployment.pk).update(phase=Phase.RUNNING)
    deployment.refresh_from_db()
    services.deployment_update(actor=SYSTEM, deployment=deployment, data={"max_batch_size": 64})
    deployment.refresh_from_db()
    rollout = Rollout.objects.get(deployment=deployment, state=RolloutState.PROGRESSING)
    _write(rollout.pk, "stable", 100, 0)
    _write(rollout.pk, "canary", 5, 3)  # too few to judge: the canary waits
    for _ in range(3):
        run(deployment)
        fake_driver.make_all_ready()
    replicas = alive(fake_driver, deployment)
    assert stable <= {r.backend_id for r in replicas}
    assert sorted(r.generation for r in replicas) == [1, 1, 2]  # 10 % of 2 replicas: one canary
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.PROGRESSING and "waiting for requests" in rollout.analysis["why"]

    _write(rollout.pk, "canary", 30, 9)
    run(deployment)
    run(deployment)
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.ROLLED_BACK and "error rate 30%" in rollout.reason
    assert {r.backend_id for r in alive(fake_driver, deployment)} == stable
    assert deployment.phase == Phase.ROLLED_BACK and deployment.template_generation == 1
    assert deployment.max_batch_size == 32  # the stable revision's spec is back


def test_a_passing_canary_moves_through_its_steps(deployment: Any, fake_driver: FakeDriver, run: Any) -> None:
    converge(deployment, fake_driver, run)
    rollouts.rollout_policy_set(
        actor=SYSTEM,
        deployment=deployment,
        data={"strategy": "canary", "steps": [{"weight": 50, "pause_seconds": 0}, {"weight": 100}],
              "analysis": {"min_requests": 10}},
    )  # fmt: skip
    Deployment.objects.filter(pk=deployment.pk).update(phase=Phase.RUNNING)
    deployment.refresh_from_db()
    services.deployment_update(actor=SYSTEM, deployment=deployment, data={"max_batch_size": 64})
    deployment.refresh_from_db()
    rollout = Rollout.objects.get(deployment=deployment, state=RolloutState.PROGRESSING)
    _write(rollout.pk, "stable", 50, 1)
    _write(rollout.pk, "canary", 50, 1)
    for _ in range(10):
        run(deployment)
        fake_driver.make_all_ready()
        assert len([r for r in alive(fake_driver, deployment) if r.backend_id in fake_driver.healthy]) >= 2
    rollout.refresh_from_db()
    assert rollout.state == RolloutState.COMPLETED and rollout.weight == 100
    assert sorted(r.generation for r in alive(fake_driver, deployment)) == [2, 2]


def test_verdicts() -> None:
    policy = {**rollouts.DEFAULT_ANALYSIS, "min_requests": 10}
    healthy = Side(requests=100, errors=1, p95_latency=0.5, p95_ttft=0.1, first_error=None)
    assert verdict(policy, healthy, Side(5, 5, 0.5, 0.1, None))[0] == "wait"
    assert verdict(policy, healthy, Side(20, 1, 0.5, 0.1, None))[0] == "pass"
    assert verdict(policy, healthy, Side(20, 6, 0.5, 0.1, None))[0] == "fail"
    slow = verdict(policy, healthy, Side(20, 0, 5.0, 0.1, None))
    assert slow[0] == "fail" and "p95 latency" in slow[1]
    late = verdict(policy, healthy, Side(20, 0, 0.5, 1.0, None))
    assert late[0] == "fail" and "TTFT" in late[1]
