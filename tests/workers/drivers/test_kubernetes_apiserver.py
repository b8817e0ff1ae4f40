"""The Kubernetes driver against an API server double, over HTTP, through the real client.

The target is a real ``Target`` row whose uploaded kubeconfig points at the double
(``tests/workers/kube_apiserver.py``); the driver is built by ``driver_for`` exactly as the
worker builds it, and the reconciler drives it. What the tests see is what the API server keeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from controlplane.core.context import SYSTEM
from controlplane.core.crypto import encrypt_json
from controlplane.deployments import services
from controlplane.deployments.choices import Phase
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target
from controlplane.gateway.selectors import gateway_routes
from tests.factories import DeploymentFactory, TargetFactory, TenantFactory
from tests.support.waiting import wait_for
from tests.workers.kube_apiserver import ApiError, ApiServer, invalid
from workers import reconciler
from workers.drivers import driver_for, instance_name
from workers.drivers.kubernetes import KubernetesDriver, PodWatch, resource_name

NS = "serving"
pytestmark = pytest.mark.django_db


@pytest.fixture
def apiserver() -> Iterator[ApiServer]:
    server = ApiServer(node_gpus=1)
    yield server
    server.close()


def kube_target(server: ApiServer, **fields: Any) -> Target:
    kubeconfig = yaml.safe_dump(server.kubeconfig())
    return TargetFactory(
        kind="kubernetes",
        kube_auth="kubeconfig",
        kube_namespace=NS,
        credentials=encrypt_json({"kubeconfig": kubeconfig}),
        **fields,
    )


def deploy(server: ApiServer, *, target: Target | None = None, **fields: Any) -> Deployment:
    tenant = TenantFactory()
    target = target or kube_target(server)
    target.grants.create(tenant=tenant)
    return DeploymentFactory(tenant=tenant, target=target, **fields)


def run(deployment: Deployment) -> reconciler.Outcome:
    outcome = reconciler.reconcile(deployment.pk, owner="apiserver-test", driver_factory=driver_for)
    if Deployment.objects.filter(pk=deployment.pk).exists():
        deployment.refresh_from_db()
    return outcome


def name_of(deployment: Deployment) -> str:
    return resource_name(reconciler.replica_spec(deployment, slot=0))


def pods(server: ApiServer, deployment: Deployment) -> list[dict[str, Any]]:
    return server.items("pods", NS, f"hangar.deployment={deployment.pk}")


def raise_(error: ApiError) -> Callable[[], None]:
    def hook() -> None:
        raise error

    return hook


def test_deploy_scale_roll_and_teardown(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=2, max_replicas=4)
    run(deployment)
    name = name_of(deployment)
    labels = {"hangar.instance": instance_name(), "hangar.deployment": str(deployment.pk)}
    for res in ("deployments", "services", "secrets"):
        obj = apiserver.get(res, NS, name)
        assert obj is not None, res
        assert obj["metadata"]["labels"] == {**labels, "hangar.tenant": str(deployment.tenant_id)}
    assert apiserver.get("services", NS, name)["spec"]["selector"] == labels
    # The double's controller made two pods, bound and ready: the deployment runs, by pod IP.
    assert deployment.phase == Phase.RUNNING and deployment.ready_replicas == 2
    endpoints = sorted(Replica.objects.filter(deployment=deployment).values_list("endpoint", flat=True))
    assert len(endpoints) == 2 and all(e.startswith("http://10.244.0.") and e.endswith(":8000") for e in endpoints)
    first_pods = {p["metadata"]["name"] for p in pods(apiserver, deployment)}

    # Scale: spec.replicas only; the two pods stay, one is added.
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=3)
    run(deployment)
    assert apiserver.get("deployments", NS, name)["spec"]["replicas"] == 3
    now = {p["metadata"]["name"] for p in pods(apiserver, deployment)}
    assert len(now) == 3 and first_pods < now
    assert deployment.phase == Phase.RUNNING and deployment.ready_replicas == 3

    # A rolling change: a new template generation, every pod replaced, converged again.
    services.deployment_restart(actor=SYSTEM, deployment=deployment)
    run(deployment)
    rolled = pods(apiserver, deployment)
    assert len(rolled) == 3 and not now & {p["metadata"]["name"] for p in rolled}
    assert {p["metadata"]["labels"]["hangar.generation"] for p in rolled} == {str(deployment.template_generation)}
    run(deployment)
    assert deployment.phase == Phase.RUNNING and deployment.observed_generation == deployment.generation
    assert set(Replica.objects.filter(deployment=deployment).values_list("name", flat=True)) == {
        p["metadata"]["name"] for p in rolled
    }

    # Teardown: everything goes; the API answers 404 for each afterwards.
    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    run(deployment)
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    assert not pods(apiserver, deployment)
    api = KubernetesDriver.for_target(deployment.target, image="i", instance=instance_name())
    for read in (
        api.apps.read_namespaced_deployment,
        api.core.read_namespaced_service,
        api.core.read_namespaced_secret,
    ):
        with pytest.raises(ApiException) as caught:
            read(name, NS)
        assert caught.value.status == 404
    # Tearing down what is already gone is fine (404 on delete).
    api.teardown(deployment.pk)


def test_service_endpoints_give_one_endpoint_per_deployment(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, target=kube_target(apiserver, kube_endpoints="service"), replicas=3, max_replicas=3)
    run(deployment)
    assert deployment.phase == Phase.RUNNING and deployment.ready_replicas == 3
    rows = Replica.objects.filter(deployment=deployment)
    assert rows.count() == 3 and all(r.state == "ready" for r in rows)
    service = f"http://{name_of(deployment)}.{NS}.svc:8000"
    assert sorted(r.endpoint for r in rows) == ["", "", service]
    [route] = gateway_routes(tenant_id=deployment.tenant_id).values()
    assert [r.endpoint for r in route.ready] == [service]

    # Readiness still comes from the pods: none ready, no endpoint for the gateway.
    apiserver.set_ready(False)
    run(deployment)
    assert deployment.ready_replicas == 0 and deployment.phase == Phase.DEGRADED
    [route] = gateway_routes(tenant_id=deployment.tenant_id).values()
    assert route.ready == ()


def test_a_conflict_on_replace_is_read_again_and_retried(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=1, max_replicas=3)
    run(deployment)
    name = name_of(deployment)
    # An operator annotates the Deployment between the driver's read and its replace.
    apiserver.before("PUT", "deployments", lambda: apiserver.touch("deployments", NS, name, {"ops/note": "hi"}))
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=2)
    outcome = run(deployment)
    assert not outcome.temporary_error
    puts = [p for m, p, _ in apiserver.requests if m == "PUT" and p.endswith(f"/deployments/{name}")]
    assert len(puts) == 2  # 409 Conflict, then read again and replaced
    assert apiserver.get("deployments", NS, name)["spec"]["replicas"] == 2
    assert deployment.phase == Phase.RUNNING and deployment.ready_replicas == 2

    # Still in conflict after the second read: temporary, nothing overwritten unseen.
    for note in ("a", "b"):
        apiserver.before("PUT", "deployments", lambda n=note: apiserver.touch("deployments", NS, name, {"ops/n": n}))
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=3)
    outcome = run(deployment)
    assert outcome.temporary_error and "kept changing" in outcome.temporary_error
    assert deployment.phase == Phase.DEGRADED
    assert apiserver.get("deployments", NS, name)["spec"]["replicas"] == 2
    run(deployment)
    assert apiserver.get("deployments", NS, name)["spec"]["replicas"] == 3


def test_create_racing_another_worker_is_not_an_error(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=1)
    name = name_of(deployment)
    other = KubernetesDriver.for_target(deployment.target, image="i", instance=instance_name())
    spec = reconciler.replica_spec(deployment, slot=0)
    # Another worker creates the Deployment between this one's read (404) and its create (409).
    apiserver.before("POST", "deployments", lambda: other.apply(spec, 1))
    outcome = run(deployment)
    assert not outcome.temporary_error and deployment.phase == Phase.RUNNING
    assert apiserver.get("deployments", NS, name) is not None


def test_failed_scheduling_is_on_the_timeline_and_in_the_phase(apiserver: ApiServer) -> None:
    apiserver.set_node_gpus(0)  # a node without GPUs: a one-GPU replica cannot be scheduled
    deployment = deploy(apiserver, replicas=1, gpus=1)
    run(deployment)
    [pod] = pods(apiserver, deployment)
    assert pod["status"]["phase"] == "Pending"
    event = DeploymentEvent.objects.get(deployment=deployment, reason="FailedScheduling")
    assert event.type == "Warning" and "Insufficient nvidia.com/gpu" in event.message
    assert deployment.phase == Phase.DEPLOYING
    assert "Unschedulable" in deployment.phase_message
    assert "Insufficient nvidia.com/gpu" in deployment.phase_message

    apiserver.set_node_gpus(1)  # a GPU node: the scheduler binds it
    run(deployment)
    assert deployment.phase == Phase.RUNNING and "Unschedulable" not in deployment.phase_message


def test_a_crash_looping_pod_fails_the_deployment_with_the_reason(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=1)
    name = name_of(deployment)
    apiserver.crash_loop(name)
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert "CrashLoopBackOff" in deployment.phase_message and "1 restarts" in deployment.phase_message
    assert any(c["type"] == "Ready" and c["reason"] == "CrashLoopBackOff" for c in deployment.conditions)
    apiserver.tick()
    apiserver.tick()
    run(deployment)
    assert deployment.phase == Phase.FAILED and "3 restarts" in deployment.phase_message

    apiserver.crash_loop(name, on=False)  # fixed (e.g. the model file replaced): it recovers
    run(deployment)
    assert deployment.phase == Phase.RUNNING


def test_a_pod_that_starts_crash_looping_after_being_ready_degrades(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=2, max_replicas=2)
    run(deployment)
    assert deployment.phase == Phase.RUNNING
    apiserver.crash_loop(name_of(deployment))
    run(deployment)
    assert deployment.phase == Phase.DEGRADED
    assert "keeps crashing" in deployment.phase_message and "CrashLoopBackOff" in deployment.phase_message


def test_api_errors_become_permanent_or_temporary(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=1)
    apiserver.deny("create", "deployments")
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert "HTTP 403" in deployment.phase_message and "create deployments.apps" in deployment.phase_message
    assert "serviceaccount" not in deployment.phase_message  # the API server's words stay in the log
    apiserver.denied.clear()

    field = "spec.template.spec.containers[0].image"
    apiserver.before("POST", "deployments", raise_(invalid("deployments", "x", [(field, 'Invalid value: "<secret>"')])))
    services.deployment_restart(actor=SYSTEM, deployment=deployment)
    run(deployment)
    assert deployment.phase == Phase.FAILED and "HTTP 422" in deployment.phase_message
    assert field in deployment.phase_message and "<secret>" not in deployment.phase_message

    for code, reason in ((429, "TooManyRequests"), (503, "ServiceUnavailable"), (500, "InternalError")):
        apiserver.before("GET", "deployments", raise_(ApiError(code, reason, "busy")))
        outcome = run(deployment)
        assert outcome.temporary_error and deployment.phase == Phase.DEGRADED, code

    run(deployment)
    assert deployment.phase == Phase.RUNNING


def test_the_pod_watch_restarts_from_a_fresh_list_after_410_and_loses_no_change(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=1)
    run(deployment)
    driver = KubernetesDriver.for_target(deployment.target, image="i", instance=instance_name(), tenant_id=None)
    nudged: list[int] = []
    stop = threading.Event()
    state = PodWatch()
    thread = threading.Thread(target=state.run, args=(driver, nudged.append, stop), kwargs={"timeout_s": 30})
    thread.start()
    try:
        wait_for(lambda: len(apiserver.watch_requests()) == 1, 10, "the first watch", interval=0.02)
        assert state.lists == 1 and not nudged  # the first list nudges nothing: the resync covers it
        first_rv = apiserver.watch_requests()[0]["resourceVersion"]
        assert apiserver.watch_requests()[0]["allowWatchBookmarks"] in ("true", "True")

        # Bookmarks move the watch's version on while nothing of ours changes.
        other = deploy(apiserver, target=deployment.target, replicas=1)
        run(other)
        wait_for(
            lambda: int(state.resource_version) > apiserver.rv - 1,
            10,
            "a bookmark or event past the other writes",
            interval=0.02,
        )
        assert other.pk in nudged and deployment.pk not in nudged
        # A watch the server ends resumes from there, without a list.
        resume_at = state.resource_version
        apiserver.drop_watches()
        wait_for(lambda: len(apiserver.watch_requests()) == 2, 10, "the resumed watch", interval=0.02)
        assert apiserver.watch_requests()[1]["resourceVersion"] == resume_at != first_rv
        assert state.lists == 1

        # The pod changes and the history before the change is compacted at once: the event is
        # never streamed, the watch gets 410 Gone, lists afresh and still nudges the deployment.
        nudged.clear()
        apiserver.expire(change=lambda: apiserver.crash_loop(name_of(deployment)))
        wait_for(lambda: state.lists == 2, 10, "the fresh list", interval=0.02)
        wait_for(lambda: deployment.pk in nudged, 10, "the nudge of the changed deployment", interval=0.02)
        wait_for(lambda: len(apiserver.watch_requests()) == 3, 10, "the watch after the list", interval=0.02)
        assert int(apiserver.watch_requests()[2]["resourceVersion"]) >= apiserver.compacted
    finally:
        stop.set()
        apiserver.drop_watches()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_the_worker_watches_the_pods_of_kubernetes_targets(apiserver: ApiServer) -> None:
    from workers import watch

    deployment = deploy(apiserver, replicas=1)
    run(deployment)
    nudged: list[int] = []
    stop = watch.start(nudged.append)
    try:
        wait_for(lambda: len(apiserver.watch_requests()) >= 1, 10, "the worker's pod watch", interval=0.02)
        [query] = apiserver.watch_requests()
        assert query["labelSelector"] == f"hangar.instance={instance_name()}"
        apiserver.crash_loop(name_of(deployment))
        wait_for(lambda: deployment.pk in nudged, 10, "a nudge for the crashing pod's deployment", interval=0.02)
    finally:
        stop.set()
        apiserver.drop_watches()


def test_the_driver_reports_the_cluster(apiserver: ApiServer) -> None:
    deployment = deploy(apiserver, replicas=1)
    run(deployment)
    driver = driver_for(deployment.target, tenant_id=deployment.tenant_id)
    health = driver.check()
    assert health["reachable"], health
    assert health["gpus"] == 1 and health["version"].startswith("v1.31")
    [replica] = driver.list(deployment.pk)
    assert driver.stage(replica.backend_id).step == "ready"
    assert isinstance(driver, KubernetesDriver) and isinstance(driver.apps, k8s.AppsV1Api)
    assert driver.known_deployment_ids() == {deployment.pk}
