"""A real Celery worker (with beat) driving local replicas: survive kill -9, heal, delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from controlplane.core.context import SYSTEM
from controlplane.deployments import services
from controlplane.deployments.choices import Phase
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica
from controlplane.deployments.replica_auth import replica_token
from controlplane.tenancy.access import Access
from tests.factories import ModelFactory, TargetFactory, TenantFactory
from tests.support.waiting import wait_for
from workers.drivers import local_driver
from workers.drivers.base import health_ok
from workers.logs import replica_logs

FAKE = "tests.workers.fake_runtime"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def fake_model(model_root: Path, tmp_path: Path) -> Path:
    path = model_root / "_shared" / f"fake-model-{tmp_path.name}"
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def deploy(model_dir: Path, replicas: int = 2, name: str = "chat") -> Deployment:
    tenant = TenantFactory()
    model = ModelFactory(tenant=tenant, source=str(model_dir))
    target = TargetFactory(tenant=tenant, kind="local")
    return services.deployment_create(
        actor=SYSTEM,
        tenant=tenant,
        model=model,
        target=target,
        data={"name": name, "replicas": replicas, "max_replicas": 4},
    )


def phase(deployment: Deployment) -> str:
    return Deployment.objects.filter(pk=deployment.pk).values_list("phase", flat=True).first() or "gone"


def test_replicas_survive_a_worker_killed_with_sigkill(start_worker: Any, fake_model: Path) -> None:
    worker = start_worker(HANGAR_LOCAL_RUNTIME_MODULE=FAKE)
    deployment = deploy(fake_model)
    wait_for(lambda: phase(deployment) == Phase.RUNNING, timeout=30, message="Running")
    before = {r.backend_id: r.endpoint for r in Replica.objects.filter(deployment=deployment)}
    assert len(before) == 2

    worker.kill()
    assert all(health_ok(endpoint) for endpoint in before.values()), "replicas died with their worker"

    restarted = timezone.now()
    created_events = DeploymentEvent.objects.filter(deployment=deployment, reason="ReplicaCreated").count()
    start_worker(HANGAR_LOCAL_RUNTIME_MODULE=FAKE)
    wait_for(
        lambda: Deployment.objects.get(pk=deployment.pk).reconciled_at > restarted,
        timeout=30,
        message="a reconcile after the restart",
    )
    assert {r.backend_id: r.endpoint for r in Replica.objects.filter(deployment=deployment)} == before
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="ReplicaCreated").count() == created_events
    assert phase(deployment) == Phase.RUNNING

    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    wait_for(lambda: phase(deployment) == "gone", timeout=30, message="deployment deleted")
    assert local_driver().list(deployment.pk) == []
    assert not any(health_ok(endpoint) for endpoint in before.values())


def test_a_killed_replica_process_is_replaced(start_worker: Any, fake_model: Path) -> None:
    import os
    import signal

    start_worker(HANGAR_LOCAL_RUNTIME_MODULE=FAKE)
    deployment = deploy(fake_model, replicas=1)
    wait_for(lambda: phase(deployment) == Phase.RUNNING, timeout=30, message="Running")
    driver = local_driver()
    [victim] = driver.list(deployment.pk)
    state = driver._read_state(driver._state_path(victim.backend_id))
    os.kill(state["pid"], signal.SIGKILL)

    def replaced() -> bool:
        rows = list(Replica.objects.filter(deployment=deployment, state="ready"))
        return len(rows) == 1 and health_ok(rows[0].endpoint) and rows[0].endpoint != victim.endpoint

    try:
        wait_for(replaced, timeout=20, message="replica replaced")
    except AssertionError:
        for event in DeploymentEvent.objects.filter(deployment=deployment).order_by("id"):
            print(event.created_at.time(), event.reason, event.message)
        raise
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="ReplicaExited").exists()


def test_real_runtime_serves_the_tiny_model(start_worker: Any, tiny_model_dir: Path, make_member: Any) -> None:
    start_worker()
    deployment = deploy(tiny_model_dir, replicas=1, name="tiny")
    seen_steps: set[str] = set()

    def running() -> bool:
        d = Deployment.objects.get(pk=deployment.pk)
        if d.progress.get("step"):
            seen_steps.add(d.progress["step"])
        assert d.phase != Phase.FAILED, d.phase_message
        return d.phase == Phase.RUNNING

    wait_for(running, timeout=120, interval=0.1, message="Running")
    replica = Replica.objects.get(deployment=deployment)
    answer = httpx.post(
        f"{replica.endpoint}/v1/chat/completions",
        json={"model": deployment.served_model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {replica_token(deployment.pk)}"},  # what the gateway presents
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert seen_steps & {"starting", "loading_model", "warming_up"}, seen_steps

    access = Access(user_id=1, roles={deployment.tenant_id: "viewer"})
    logs = replica_logs(access=access, replica_id=replica.pk, tail=50)
    assert "hangar-runtime: stage=ready" in logs
    from controlplane.core.exceptions import NotFound

    with pytest.raises(NotFound):
        replica_logs(access=Access(user_id=2, roles={}), replica_id=replica.pk)
