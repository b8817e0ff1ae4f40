"""Fault tests against the real Docker daemon with the real runtime image and the tiny model.

Marked ``docker``: they run whenever a daemon answers (``make test``) and fail, not skip, when
none does (set ``HANGAR_SKIP_DOCKER=1`` to skip deliberately, as tests/e2e does). Every
container carries ``hangar.instance=test_<db>`` and is removed at the start and end of the module
(``tests.workers.docker_support``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from controlplane.core.context import SYSTEM
from controlplane.deployments import services
from controlplane.deployments.choices import ConditionType, Phase
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from tests.factories import AccessTokenFactory, ModelFactory, TargetFactory, TenantFactory
from tests.support.ports import listening_socket
from tests.support.waiting import wait_for
from tests.workers.docker_support import (
    DOCKER_URL,
    ensure_runtime_image,
    readable_by_containers,
)
from workers import reconciler
from workers.drivers import instance_name
from workers.drivers.base import LABEL_DEPLOYMENT, LABEL_INSTANCE

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(400)]

READY_TIMEOUT = 150


@pytest.fixture(scope="module")
def runtime_image(docker_client: Any) -> str:
    return ensure_runtime_image(docker_client)


@pytest.fixture(scope="module")
def shared_model(tiny_model_dir: Path) -> Path:
    return readable_by_containers(tiny_model_dir)


@pytest.fixture
def docker_env(runtime_image: str, shared_model: Path) -> Path:
    return shared_model


def deploy(model_dir: Path | str, *, replicas: int = 1, docker_url: str = DOCKER_URL, **data: Any) -> Deployment:
    tenant = TenantFactory()
    model = ModelFactory(tenant=tenant, source=str(model_dir))
    target = TargetFactory(tenant=tenant, kind="docker", docker_url=docker_url)
    spec = {"name": "chat", "replicas": replicas, "max_replicas": 4, "cpus": 2.0, **data}
    return services.deployment_create(actor=SYSTEM, tenant=tenant, model=model, target=target, data=spec)


def containers(client: Any, deployment: Deployment) -> list[Any]:
    return client.containers.list(
        all=True,
        filters={"label": [f"{LABEL_INSTANCE}={instance_name()}", f"{LABEL_DEPLOYMENT}={deployment.pk}"]},
        ignore_removed=True,  # a replica replaced while we look (a slow start on a busy host) is gone
    )


def fresh(deployment: Deployment) -> Deployment:
    return Deployment.objects.get(pk=deployment.pk)


def running(deployment: Deployment) -> bool:
    d = fresh(deployment)
    assert d.phase != Phase.FAILED, d.phase_message
    return d.phase == Phase.RUNNING


def reconcile_until(deployment: Deployment, predicate: Any, timeout: float = READY_TIMEOUT) -> None:
    """In-process passes (no worker), the way the task re-enqueues itself, until ``predicate``."""

    def step() -> bool:
        reconciler.reconcile(deployment.pk, owner="test-inline")
        return bool(predicate())

    wait_for(step, timeout=timeout, interval=0.5, message="reconciled to the predicate")


# ----------------------------------------------------------------------------- with workers


def test_worker_killed_mid_deploy_leaves_exactly_the_desired_containers(
    docker_client: Any, docker_env: Path, start_worker: Any
) -> None:
    worker = start_worker()
    deployment = deploy(docker_env, replicas=2)
    # Mid-deploy: containers exist, nothing is ready yet.
    wait_for(lambda: containers(docker_client, deployment), timeout=60, interval=0.05, message="first container")
    assert fresh(deployment).phase != Phase.RUNNING
    worker.kill()

    start_worker()
    wait_for(lambda: running(deployment), timeout=READY_TIMEOUT, message="Running after the restart")
    found = containers(docker_client, deployment)
    assert len(found) == 2, [c.name for c in found]
    assert all(c.status == "running" for c in found)
    assert {c.id for c in found} == set(
        Replica.objects.filter(deployment=deployment).values_list("backend_id", flat=True)
    )
    # No orphans anywhere: every test container belongs to an existing deployment.
    for container in docker_client.containers.list(all=True, filters={"label": f"{LABEL_INSTANCE}={instance_name()}"}):
        assert Deployment.objects.filter(pk=int(container.labels[LABEL_DEPLOYMENT])).exists(), container.name

    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    wait_for(lambda: not Deployment.objects.filter(pk=deployment.pk).exists(), timeout=60, message="deleted")
    assert containers(docker_client, deployment) == []


def test_docker_killed_replica_is_healed_within_the_resync_interval(
    docker_client: Any, docker_env: Path, start_worker: Any
) -> None:
    start_worker()
    deployment = deploy(docker_env, replicas=1)
    wait_for(lambda: running(deployment), timeout=READY_TIMEOUT, message="Running")
    [victim] = containers(docker_client, deployment)

    victim.kill()
    killed = time.monotonic()
    resync = 1.0  # HANGAR_RESYNC_INTERVAL of the test worker

    def replacement() -> Any:
        return [c for c in containers(docker_client, deployment) if c.id != victim.id and c.status == "running"]

    # Within one resync interval plus one pass (a slow shared CI box gets a few seconds of slack);
    # in practice the Docker event watcher replaces it in well under a second.
    wait_for(replacement, timeout=resync + 5, interval=0.1, message="replacement container")
    noticed = time.monotonic() - killed
    wait_for(lambda: running(deployment), timeout=READY_TIMEOUT, message="Running again")
    assert [c.id for c in containers(docker_client, deployment)] != [victim.id]
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="ReplicaExited").exists()
    assert not DeploymentEvent.objects.filter(deployment=deployment, reason="ReplicaUnhealthy").exists()
    print(f"[docker] killed replica replaced after {noticed:.2f} s")


def test_two_workers_never_create_duplicates(docker_client: Any, docker_env: Path, start_worker: Any) -> None:
    from workers.tasks import reconcile_deployment

    start_worker()
    start_worker()
    deployment = deploy(docker_env, replicas=2)
    for _ in range(10):
        reconcile_deployment.delay(deployment.pk)
    most = 0

    def converged() -> bool:
        nonlocal most
        most = max(most, len(containers(docker_client, deployment)))
        return running(deployment)

    wait_for(converged, timeout=READY_TIMEOUT, interval=0.1, message="Running")
    assert most == 2
    assert len(containers(docker_client, deployment)) == 2


def test_daemon_unreachable_degrades_then_recovers_by_itself(
    docker_client: Any, docker_env: Path, start_worker: Any, tmp_path: Path
) -> None:
    # An allowlisted socket with no daemon behind it yet; the daemon "comes back" when it appears.
    socket_path = tmp_path / "docker.sock"
    url = f"unix://{socket_path}"
    start_worker(HANGAR_DOCKER_SOCKETS=f"{DOCKER_URL},{url}")
    deployment = deploy(docker_env, replicas=1, docker_url=url)

    def degraded() -> bool:
        d = fresh(deployment)
        return d.phase == Phase.DEGRADED

    wait_for(degraded, timeout=30, message="Degraded")
    d = fresh(deployment)
    assert "unreachable (socket not found)" in d.phase_message and d.target.name in d.phase_message
    assert str(socket_path) not in d.phase_message  # the target's settings are not the tenant's to read
    reachable = next(c for c in d.conditions if c["type"] == ConditionType.BACKEND_REACHABLE)
    assert reachable["status"] == "False" and reachable["reason"] == "DaemonUnreachable"

    socket_path.symlink_to("/var/run/docker.sock")
    wait_for(lambda: running(deployment), timeout=READY_TIMEOUT, message="Running after the daemon came back")
    assert len(containers(docker_client, deployment)) == 1


# ----------------------------------------------------------------------------- in-process passes


def test_reconcile_twice_changes_nothing(docker_client: Any, docker_env: Path, transactional_db: Any) -> None:
    deployment = deploy(docker_env, replicas=1)
    reconcile_until(deployment, lambda: running(deployment))
    ids = {c.id for c in containers(docker_client, deployment)}
    n_events = DeploymentEvent.objects.filter(deployment=deployment).count()
    state = fresh(deployment)

    first = reconciler.reconcile(deployment.pk, owner="again-1")
    second = reconciler.reconcile(deployment.pk, owner="again-2")

    assert first.actions == [] and second.actions == []
    assert {c.id for c in containers(docker_client, deployment)} == ids
    assert DeploymentEvent.objects.filter(deployment=deployment).count() == n_events
    after = fresh(deployment)
    assert (after.phase, after.conditions, after.observed_generation) == (
        state.phase,
        state.conditions,
        state.observed_generation,
    )


def test_concurrent_passes_create_no_duplicates(docker_client: Any, docker_env: Path, transactional_db: Any) -> None:
    from django.db import connection

    deployment = deploy(docker_env, replicas=2)
    barrier = threading.Barrier(4)

    def race(n: int) -> None:
        barrier.wait()
        try:
            reconciler.reconcile(deployment.pk, owner=f"racer-{n}")
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(containers(docker_client, deployment)) == 2


def test_listing_while_another_worker_removes_containers_never_fails(docker_env: Path, transactional_db: Any) -> None:
    """Listing inspects each container it found; one removed in between (another worker's
    scale-down) is gone, not an error that fails the reconcile pass."""
    from workers.drivers.docker import DockerDriver

    deployment = fresh(deploy(docker_env, replicas=0))
    driver = DockerDriver(url=DOCKER_URL, image=settings.HANGAR_RUNTIME_IMAGE, instance=instance_name())
    labels = reconciler.replica_spec(deployment, slot=0).labels | {LABEL_INSTANCE: instance_name()}
    client = driver.client
    created = [client.containers.create(settings.HANGAR_RUNTIME_IMAGE, labels=labels) for _ in range(30)]
    listed: list[int] = []
    errors: list[BaseException] = []

    def remover() -> None:
        for container in created:
            container.remove(force=True)

    thread = threading.Thread(target=remover)
    thread.start()
    try:
        while thread.is_alive():
            try:
                listed.append(len(driver.list(deployment.pk)))
            except Exception as exc:  # what a reconcile pass would have died of
                errors.append(exc)
                break
    finally:
        thread.join()
    assert errors == []
    assert listed and max(listed) <= len(created)
    assert driver.list(deployment.pk) == []


def test_image_missing_fails_with_how_to_build_it(docker_env: Path, transactional_db: Any, settings: Any) -> None:
    settings.HANGAR_RUNTIME_IMAGE = "hangar-runtime:no-such-tag"
    deployment = deploy(docker_env)
    reconciler.reconcile(deployment.pk, owner="t")
    d = fresh(deployment)
    assert d.phase == Phase.FAILED
    assert "hangar-runtime:no-such-tag" in d.phase_message and "deploy/images/build" in d.phase_message
    assert DeploymentEvent.objects.filter(deployment=d, reason="ImageMissing", type="Warning").exists()


def test_port_clash_fails_and_leaves_no_container(docker_client: Any, docker_env: Path, transactional_db: Any) -> None:
    with listening_socket() as busy:
        port = busy.getsockname()[1]
        deployment = deploy(docker_env, host_port=port)
        reconciler.reconcile(deployment.pk, owner="t")
    d = fresh(deployment)
    assert d.phase == Phase.FAILED, d.phase_message
    assert f"port {port}" in d.phase_message.lower() and "already in use" in d.phase_message
    assert containers(docker_client, deployment) == []


def test_model_path_missing_fails_clearly(
    docker_client: Any, docker_env: Path, transactional_db: Any, model_root: Path
) -> None:
    missing = model_root / "_shared" / "nonexistent-hangar-model"  # allowed, but gone
    deployment = deploy(missing)
    reconciler.reconcile(deployment.pk, owner="t")
    d = fresh(deployment)
    assert d.phase == Phase.FAILED
    assert str(missing) in d.phase_message and "does not exist" in d.phase_message
    assert containers(docker_client, deployment) == []


def test_missing_socket_path_is_a_temporary_error(docker_env: Path, transactional_db: Any, settings: Any) -> None:
    settings.HANGAR_DOCKER_SOCKETS = [DOCKER_URL, "unix:///nonexistent/docker.sock"]
    deployment = deploy(docker_env, docker_url="unix:///nonexistent/docker.sock")
    outcome = reconciler.reconcile(deployment.pk, owner="t")
    assert outcome.temporary_error
    d = fresh(deployment)
    assert d.phase == Phase.DEGRADED and "unreachable (socket not found)" in d.phase_message


def test_check_target_records_health(docker_env: Path, transactional_db: Any, settings: Any) -> None:
    from workers.tasks import check_target

    settings.HANGAR_DOCKER_SOCKETS = [DOCKER_URL, "unix:///nonexistent/docker.sock"]
    ok = TargetFactory(kind="docker", docker_url=DOCKER_URL)
    down = TargetFactory(kind="docker", docker_url="unix:///nonexistent/docker.sock")
    check_target(ok.pk)
    check_target(down.pk)
    ok_health = Target.objects.get(pk=ok.pk).health
    assert ok_health["status"] == "ok" and ok_health["reachable"] is True and ok_health["version"]
    assert ok_health["runtime_image_present"] is True and ok_health["cpus"] >= 1
    down_health = Target.objects.get(pk=down.pk).health
    assert down_health["reachable"] is False
    assert (down_health["status"], down_health["reason"]) == ("unreachable", "socket not found")


def test_a_container_its_worker_never_started_is_replaced(
    docker_client: Any, docker_env: Path, transactional_db: Any
) -> None:
    from workers.drivers.docker import DockerDriver

    deployment = fresh(deploy(docker_env))
    driver = DockerDriver(url=DOCKER_URL, image=settings.HANGAR_RUNTIME_IMAGE, instance=instance_name())
    spec = reconciler.replica_spec(deployment, slot=0)
    # What a worker killed between "create" and "start" leaves behind.
    orphan = docker_client.containers.create(
        settings.HANGAR_RUNTIME_IMAGE, name=driver.container_name(spec), labels=spec.labels
    )
    reconciler.reconcile(deployment.pk, owner="t")
    [container] = containers(docker_client, deployment)
    assert container.id != orphan.id and container.status == "running"
    assert fresh(deployment).phase == Phase.DEPLOYING


def test_containers_of_deleted_deployments_are_collected(
    docker_client: Any, docker_env: Path, transactional_db: Any
) -> None:
    from workers.tasks import collect_orphans

    TargetFactory(kind="docker", docker_url=DOCKER_URL)
    labels = {LABEL_INSTANCE: instance_name(), LABEL_DEPLOYMENT: "987654", "hangar.generation": "1",
              "hangar.replica": "gone-g1-0"}  # fmt: skip
    orphan = docker_client.containers.create(settings.HANGAR_RUNTIME_IMAGE, labels=labels)
    foreign = docker_client.containers.create(
        settings.HANGAR_RUNTIME_IMAGE, labels={**labels, LABEL_INSTANCE: "test_another_installation"}
    )
    try:
        assert collect_orphans() >= 1
        remaining = {c.id for c in docker_client.containers.list(all=True)}
        assert orphan.id not in remaining
        assert foreign.id in remaining  # another installation's containers are not ours to remove
    finally:
        foreign.remove(force=True)


# ----------------------------------------------------------------------------- the whole lifecycle


def test_rest_api_lifecycle_on_docker(
    docker_client: Any, docker_env: Path, start_worker: Any, make_member: Any
) -> None:
    """Through the REST API with a bearer token: deploy 2 replicas, scale to 3 and back, roll, delete."""
    from rest_framework.test import APIClient

    from workers.drivers.base import LABEL_GENERATION

    start_worker()
    tenant = TenantFactory()
    admin = make_member("admin", tenant)
    # Targets are the platform's: one is granted to the tenant, which deploys onto it.
    granted = TargetFactory(tenant=tenant, name="docker", kind="docker", docker_url=DOCKER_URL)
    token = AccessTokenFactory(user=admin, name="ci").secret
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def ok(response: Any, status: int) -> Any:
        assert response.status_code == status, response.content[:2000]
        return response.json() if response.content else None

    model = ok(api.post("/api/v1/models/", {"name": "tiny", "source": str(docker_env)}, format="json"), 201)
    target = ok(api.get(f"/api/v1/targets/{granted.pk}/"), 200)
    created = ok(
        api.post(
            "/api/v1/deployments/",
            {
                "name": "chat",
                "model": model["id"],
                "target": target["id"],
                "replicas": 2,
                "max_replicas": 4,
                "cpus": 2.0,
            },
            format="json",
        ),
        201,
    )
    url = f"/api/v1/deployments/{created['id']}/"
    deployment = Deployment.objects.get(pk=created["id"])
    ready_seen: list[int] = []  # ready replicas observed while a change is under way

    def settled(replicas: int, generation: int) -> bool:
        body = ok(api.get(url), 200)
        assert body["phase"] != Phase.FAILED, body["phase_message"]
        ready_seen.append(body["ready_replicas"])
        live = [c for c in containers(docker_client, deployment) if c.status == "running"]
        return (
            body["phase"] == Phase.RUNNING
            and body["observed_generation"] == body["generation"]
            and body["ready_replicas"] == replicas
            and len(containers(docker_client, deployment)) == replicas
            and all(c.labels[LABEL_GENERATION] == str(generation) for c in live)
        )

    def timeline() -> list[dict[str, Any]]:
        return list(ok(api.get(f"/api/v1/events/?deployment={deployment.pk}&limit=500"), 200)["results"])

    def reasons() -> list[str]:
        return [e["reason"] for e in timeline()]

    # Deploy: 2 ready replicas, each announced.
    wait_for(lambda: settled(2, 1), timeout=READY_TIMEOUT, interval=0.25, message="2 replicas Running")
    assert reasons().count("ReplicaReady") == 2 and "Created" in reasons()
    first_two = {c.id for c in containers(docker_client, deployment)}

    # Scale to 3: the two running replicas stay, one is added.
    ok(api.post(url + "scale/", {"replicas": 3}, format="json"), 202)
    wait_for(lambda: settled(3, 1), timeout=READY_TIMEOUT, interval=0.25, message="3 replicas Running")
    assert first_two < {c.id for c in containers(docker_client, deployment)}
    assert "Scaled" in reasons()

    # And back to 2: one removed, nothing restarted.
    ok(api.post(url + "scale/", {"replicas": 2}, format="json"), 202)
    wait_for(lambda: settled(2, 1), timeout=60, interval=0.25, message="back to 2 replicas")
    assert "ReplicaRemoved" in reasons()

    # Rolling update (a runtime option): new generation ready before the old one goes.
    ready_seen.clear()
    body = ok(api.patch(url, {"dtype": "bfloat16"}, format="json"), 200)
    assert body["dtype"] == "bfloat16"
    wait_for(lambda: settled(2, 2), timeout=READY_TIMEOUT, interval=0.25, message="rolled to generation 2")
    assert min(ready_seen) >= 2, f"ready replicas dipped during the rolling update: {ready_seen}"
    replaced = [e["message"] for e in timeline() if e["reason"] == "ReplicaReplaced"]
    assert len(replaced) == 2 and "SpecChanged" in reasons(), replaced
    assert not ({c.id for c in containers(docker_client, deployment)} & first_two)

    # Delete: 202, the deployment goes through Deleting, every container goes, then the row.
    assert ok(api.delete(url), 202)["phase"] == Phase.DELETING
    wait_for(lambda: api.get(url).status_code == 404, timeout=90, interval=0.25, message="deployment deleted")
    assert containers(docker_client, deployment) == []
