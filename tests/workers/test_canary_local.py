"""Canary releases end to end (issue 13 item 4): a real Celery worker, real runtime replicas of the
tiny model on the local driver, a real gateway process, PostgreSQL and Redis, and the ``openai``
client as the users' traffic.

- A canary of a revision whose replicas fail 30 % of requests (the runtime's fault switch) is
  rolled back by the analysis; clients see failures only from the canary's share of the analysis
  window; the stable replicas serve throughout and afterwards.
- A good canary is promoted step by step; ready capacity never drops below
  ``replicas - max_unavailable``; no client request fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from django.db import connection

from controlplane.audit.models import AuditLog
from controlplane.core.context import SYSTEM, Actor
from controlplane.deployments import revisions, rollouts, services
from controlplane.deployments.choices import Phase, ReplicaState, RolloutState
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Rollout
from tests.controlplane.gateway.conftest import Server, start_gateway
from tests.factories import ApiKeyFactory, ModelFactory, PlatformAdminFactory, TargetFactory, TenantFactory
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}


@pytest.fixture
def gateway_process(transactional_db: Any, tmp_path: Path) -> Iterator[Server]:
    server = start_gateway(str(connection.settings_dict["NAME"]), log_path=tmp_path / "gateway.log")
    yield server
    server.stop()


@dataclass
class Traffic:
    """Users: threads sending chat completions through the gateway until stopped."""

    client: openai.OpenAI
    model: str
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def one(self) -> None:
        try:
            self.client.chat.completions.create(model=self.model, **ASK)  # type: ignore[call-overload]
        except openai.APIError as exc:
            with self.lock:
                self.failed.append(f"{type(exc).__name__}: {exc}"[:200])
            return
        with self.lock:
            self.ok += 1

    def loop(self) -> None:
        while not self.stop.is_set():
            self.one()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.ok, len(self.failed)


@pytest.fixture
def traffic() -> Iterator[Callable[..., Traffic]]:
    pools: list[tuple[Traffic, ThreadPoolExecutor]] = []

    def start(client: openai.OpenAI, model: str, users: int = 3) -> Traffic:
        t = Traffic(client, model)
        pool = ThreadPoolExecutor(users)
        for _ in range(users):
            pool.submit(t.loop)
        pools.append((t, pool))
        return t

    yield start
    for t, pool in pools:
        t.stop.set()
        pool.shutdown(wait=True)


def serving(tiny_model_dir: Path, policy: dict[str, Any], replicas: int = 2) -> tuple[Deployment, str]:
    tenant = TenantFactory()
    model = ModelFactory(tenant=tenant, source=str(tiny_model_dir))
    target = TargetFactory(tenant=tenant, kind="local")
    deployment = services.deployment_create(
        actor=SYSTEM,
        tenant=tenant,
        model=model,
        target=target,
        data={
            "name": "tiny",
            "served_model_name": "tiny",
            "replicas": replicas,
            "max_replicas": 4,
            "max_batch_size": 8,
        },
    )
    rollouts.rollout_policy_set(actor=SYSTEM, deployment=deployment, data=policy)
    wait_for(lambda: _phase(deployment) == Phase.RUNNING, timeout=240, interval=0.2, message="Running")
    return deployment, ApiKeyFactory(tenant=tenant, name="users").secret


def _phase(deployment: Deployment) -> str:
    d = Deployment.objects.get(pk=deployment.pk)
    assert d.phase != Phase.FAILED, d.phase_message
    return d.phase


def _ready(deployment: Deployment, generation: int | None = None) -> list[Replica]:
    rows = Replica.objects.filter(deployment=deployment, state=ReplicaState.READY)
    return list(rows if generation is None else rows.filter(generation=generation))


def _timeline(deployment: Deployment) -> str:
    events = DeploymentEvent.objects.filter(deployment=deployment).order_by("id")
    return "\n".join(f"{e.created_at.time()} {e.reason}: {e.message}" for e in events)


def test_a_canary_failing_30_percent_is_rolled_back_while_stable_serves(
    start_worker: Any, tiny_model_dir: Path, gateway_process: Server, traffic: Any, settings: Any
) -> None:
    settings.HANGAR_FAULT_INJECTION = True  # this process writes the faults; the worker applies them
    start_worker(HANGAR_FAULT_INJECTION="true")
    min_requests = 20
    deployment, token = serving(
        tiny_model_dir,
        {
            "strategy": "canary",
            "steps": [{"weight": 20, "pause_seconds": 600}, {"weight": 100}],
            "analysis": {"min_requests": min_requests, "max_error_rate": 0.1},
        },
    )
    stable = {r.backend_id for r in _ready(deployment)}
    client = openai.OpenAI(base_url=f"{gateway_process.url}/v1", api_key=token, max_retries=0, timeout=60)

    admin = Actor(user=PlatformAdminFactory(), via="api")
    with_faults = revisions.deployment_faults_set(actor=admin, deployment=deployment, faults={"error_rate": 0.3})
    assert with_faults.template_generation == 2
    wait_for(lambda: _ready(deployment, generation=2), timeout=180, interval=0.2, message="canary replica ready")

    users = traffic(client, "tiny")
    try:
        wait_for(lambda: _phase(deployment) == Phase.ROLLED_BACK, timeout=180, interval=0.2, message="RolledBack")
    except AssertionError:
        raise AssertionError(f"{users.counts()}\n{_timeline(deployment)}") from None
    ok_at_abort, failed_at_abort = users.counts()

    rollout = Rollout.objects.get(deployment=deployment)
    assert rollout.state == RolloutState.ROLLED_BACK and "error rate" in rollout.reason
    canary = rollout.analysis["canary"]
    assert canary["requests"] >= min_requests and canary["error_rate"] > 0.1, rollout.analysis
    # Only the canary's share failed: the 20 % of requests it got, and only until the analysis
    # had its window (min_requests canary requests, plus those in flight while it decided).
    assert 0 < failed_at_abort <= min_requests, (failed_at_abort, users.failed[:5])
    assert ok_at_abort >= 3 * failed_at_abort
    assert all("InternalServerError" in f for f in users.failed), users.failed[:5]

    # Canary replicas go; stable (the very same processes) keeps serving, and nothing fails now.
    wait_for(
        lambda: not Replica.objects.filter(deployment=deployment, generation=2).exists(),
        timeout=60,
        message="canary replicas removed",
    )
    assert {r.backend_id for r in _ready(deployment)} == stable
    before = users.counts()
    wait_for(lambda: users.counts()[0] >= before[0] + 30, timeout=120, message="30 more answers")
    users.stop.set()
    assert users.counts()[1] == before[1], users.failed[before[1] :]
    d = Deployment.objects.get(pk=deployment.pk)
    assert d.template_generation == 1 and d.faults == {} and d.phase == Phase.ROLLED_BACK
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="RolledBack", type="Warning").exists()
    assert AuditLog.objects.filter(action="deployment.rollout_abort", object_id=str(deployment.pk)).exists()


def test_a_good_canary_is_promoted_step_by_step_without_losing_capacity(
    start_worker: Any, tiny_model_dir: Path, gateway_process: Server, traffic: Any
) -> None:
    start_worker()
    replicas, max_unavailable = 2, 0
    deployment, token = serving(
        tiny_model_dir,
        {
            "strategy": "canary",
            "max_surge": "1",
            "max_unavailable": str(max_unavailable),
            "steps": [{"weight": 50, "pause_seconds": 2}, {"weight": 100}],
            "analysis": {"min_requests": 5},
        },
        replicas=replicas,
    )
    client = openai.OpenAI(base_url=f"{gateway_process.url}/v1", api_key=token, max_retries=0, timeout=60)
    users = traffic(client, "tiny")
    services.deployment_update(actor=SYSTEM, deployment=deployment, data={"max_batch_size": 16})

    lowest = [replicas]
    weights: list[int] = []

    def done() -> bool:
        lowest[0] = min(lowest[0], len(_ready(deployment)))
        rollout = Rollout.objects.filter(deployment=deployment).order_by("-id").first()
        if rollout is not None and (not weights or weights[-1] != rollout.weight):
            weights.append(rollout.weight)
        assert rollout is None or rollout.state != RolloutState.ROLLED_BACK, rollout.reason
        return rollout is not None and rollout.state == RolloutState.COMPLETED

    try:
        wait_for(done, timeout=300, interval=0.1, message="rollout completed")
    except AssertionError:
        raise AssertionError(f"{users.counts()}\n{_timeline(deployment)}") from None
    users.stop.set()
    ok, _ = users.counts()
    # Replaced replicas leave routing before they drain, and a 503 before the first byte is
    # retried on another replica (workers.draining, the gateway's retry): no client sees a failure.
    assert users.failed == [], users.failed[:5]
    assert ok > 10
    assert lowest[0] >= replicas - max_unavailable
    assert weights[0] == 50 and weights[-1] == 100, weights
    reasons = list(DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert {"CanaryStarted", "CanaryPromoted", "RolloutComplete"} <= set(reasons)
    wait_for(
        lambda: sorted(r.generation for r in Replica.objects.filter(deployment=deployment)) == [2, 2],
        timeout=60,
        message="only revision 2 left",
    )
    wait_for(lambda: _phase(deployment) == Phase.RUNNING, timeout=60, message="Running on revision 2")
