"""Kubernetes driver: manifests validated against the official schemas, calls against a recording fake."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from controlplane.catalog import services as catalog
from controlplane.core.context import SYSTEM
from controlplane.deployments import services
from controlplane.deployments.choices import Phase
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica
from controlplane.deployments.replica_auth import replica_token
from tests.factories import DeploymentFactory, ModelFactory, TargetFactory, TenantFactory
from tests.workers.k8s_fake import FakeCluster
from workers import reconciler
from workers.drivers import instance_name
from workers.drivers.base import ModelFetch, ReplicaSpec
from workers.drivers.kubernetes import (
    KubernetesDriver,
    build_deployment,
    build_secret,
    build_service,
    name_prefix,
    resource_name,
)
from workers.runtime.store.manifest import manifest_hash

K8S_SCHEMA_VERSION = "1.37"  # the newest schema kubernetes-validate ships


def serialize(obj: Any) -> dict[str, Any]:
    return k8s.ApiClient().sanitize_for_serialization(obj)


def spec(**overrides: Any) -> ReplicaSpec:
    base: dict[str, Any] = {
        "instance": "test_hangar",
        "tenant_id": 3,
        "deployment_id": 42,
        "deployment_name": "chat",
        "name": "chat-g2-0",
        "slot": 0,
        "generation": 2,
        "model_path": "/srv/models/tiny",
        "served_model_name": "tiny-chat",
    }
    return ReplicaSpec(**(base | overrides))


@pytest.mark.parametrize(
    "overrides, volume",
    [
        ({}, {}),
        (
            {
                "gpus": 1,
                "node_selector": {"nvidia.com/gpu.product": "A100", "pool": "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "cpus": 7.5,
                "memory_mb": 30000,
            },
            {"type": "pvc", "claimName": "models"},
        ),
    ],
)
def test_manifests_validate_against_the_official_schema(overrides: dict[str, Any], volume: dict[str, Any]) -> None:
    deployment = build_deployment(
        spec(**overrides), replicas=3, namespace="serving", image="hangar-runtime:latest", volume=volume
    )
    service = build_service(spec(**overrides), namespace="serving")
    secret = build_secret(spec(token="t0ken", **overrides), namespace="serving")
    for manifest in (serialize(deployment), serialize(service), serialize(secret)):
        kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)

    data = serialize(deployment)
    pod = data["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert data["spec"]["replicas"] == 3
    assert data["spec"]["selector"]["matchLabels"] == {"hangar.instance": "test_hangar", "hangar.deployment": "42"}
    assert data["spec"]["template"]["metadata"]["labels"]["hangar.generation"] == "2"
    assert data["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["volumeMounts"] == [{"name": "model", "mountPath": "/model", "readOnly": True}]
    assert container["args"][:2] == ["--model", "/model"]
    if overrides:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"]["pool"] == "gpu"
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
        assert "--device" in container["args"]
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert pod["volumes"][0]["hostPath"] == {"path": "/srv/models/tiny", "type": "Directory"}


def test_the_pod_takes_its_token_from_the_secret_and_never_holds_it() -> None:
    token = "s3cr3t-replica-token-value"
    deployment = serialize(build_deployment(spec(token=token), replicas=2, namespace="n", image="i", volume={}))
    secret = serialize(build_secret(spec(token=token), namespace="n"))
    assert token not in json.dumps(deployment)
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HANGAR_RUNTIME_TOKEN"] == {
        "name": "HANGAR_RUNTIME_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": deployment["metadata"]["name"], "key": "token"}},
    }
    assert secret["metadata"]["name"] == deployment["metadata"]["name"]
    assert secret["metadata"]["labels"] == deployment["metadata"]["labels"]
    assert base64.b64decode(secret["data"]["token"]).decode() == token
    # A new token (SECRET_KEY rotated) changes the pod template, so Kubernetes rolls the pods.
    rotated = serialize(build_deployment(spec(token="another"), replicas=2, namespace="n", image="i", volume={}))
    assert rotated["spec"]["template"] != deployment["spec"]["template"]
    assert "another" not in json.dumps(rotated)


def test_scaling_does_not_change_the_pod_template() -> None:
    one = serialize(build_deployment(spec(), replicas=1, namespace="n", image="i", volume={}))
    three = serialize(build_deployment(spec(), replicas=3, namespace="n", image="i", volume={}))
    assert one["spec"]["template"] == three["spec"]["template"]
    restarted = serialize(build_deployment(spec(generation=3), replicas=1, namespace="n", image="i", volume={}))
    assert restarted["spec"]["template"] != one["spec"]["template"]


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def k8s_run(cluster: FakeCluster) -> Any:
    def make_driver(target: Any, tenant_id: int | None = None) -> KubernetesDriver:
        return KubernetesDriver(
            apps=cluster.apps,
            core=cluster.core,
            namespace=target.kube_namespace,
            image="hangar-runtime:latest",
            instance=instance_name(),  # what the reconciler derives from the test database's name
        )

    def run(deployment: Any) -> reconciler.Outcome:
        outcome = reconciler.reconcile(deployment.pk, owner="k8s-test", driver_factory=make_driver)
        if Deployment.objects.filter(pk=deployment.pk).exists():
            deployment.refresh_from_db()
        return outcome

    return run


@pytest.mark.django_db
def test_reconcile_through_the_fake_cluster(cluster: FakeCluster, k8s_run: Any) -> None:
    deployment = DeploymentFactory(
        replicas=2,
        max_replicas=4,
        target__kind="kubernetes",
        target__kube_namespace="serving",
        gpus=1,
        target__node_selector={"pool": "gpu"},
        node_selector={"zone": "a"},
    )
    k8s_run(deployment)
    [(method, (namespace, body))] = [c for c in cluster.calls if c[0] == "create_namespaced_deployment"]
    assert namespace == "serving" and body.spec.replicas == 2
    assert body.spec.template.spec.node_selector == {"pool": "gpu", "zone": "a"}
    assert any(c[0] == "create_namespaced_service" for c in cluster.calls)
    # The replica token: in a Secret created before the Deployment, nowhere in the Deployment.
    token = replica_token(deployment.pk)
    [secret] = cluster.secrets.values()
    assert secret.metadata.name == body.metadata.name and secret.metadata.labels == body.metadata.labels
    assert base64.b64decode(secret.data["token"]).decode() == token
    assert token not in json.dumps(serialize(body))
    methods = [c[0] for c in cluster.calls]
    assert methods.index("create_namespaced_secret") < methods.index("create_namespaced_deployment")
    assert deployment.phase == Phase.DEPLOYING

    cluster.run_pods("serving", ready=True)
    k8s_run(deployment)
    assert deployment.phase == Phase.RUNNING
    assert deployment.ready_replicas == 2
    assert Replica.objects.filter(deployment=deployment, state="ready").count() == 2

    # Converged: a second pass reads but changes nothing in the cluster and emits no event.
    before_calls = len(cluster.mutations())
    n_events = DeploymentEvent.objects.filter(deployment=deployment).count()
    k8s_run(deployment)
    assert len(cluster.mutations()) == before_calls
    assert DeploymentEvent.objects.filter(deployment=deployment).count() == n_events

    # Scale: only spec.replicas changes (same template, no restart).
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=3)
    k8s_run(deployment)
    _, (name, _, patched) = [c for c in cluster.calls if c[0] == "replace_namespaced_deployment"][-1]
    assert patched.spec.replicas == 3 and patched.spec.template.metadata.labels["hangar.generation"] == "1"

    # Restart: the template's generation label changes -> Kubernetes rolls the pods.
    services.deployment_restart(actor=SYSTEM, deployment=deployment)
    k8s_run(deployment)
    _, (_, _, patched) = [c for c in cluster.calls if c[0] == "replace_namespaced_deployment"][-1]
    assert patched.spec.template.metadata.labels["hangar.generation"] == "2"
    cluster.run_pods("serving", ready=True)
    k8s_run(deployment)
    assert deployment.phase == Phase.RUNNING and deployment.observed_generation == deployment.generation

    # Kubernetes events about our objects become deployment events.
    cluster.events.append(
        k8s.CoreV1Event(
            metadata=k8s.V1ObjectMeta(name="e1", namespace="serving", uid="u1"),
            involved_object=k8s.V1ObjectReference(
                kind="Pod", name=f"{name_prefix(instance_name(), deployment.pk)}{deployment.name}-2-0"
            ),
            reason="FailedScheduling",
            message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            type="Warning",
            last_timestamp=datetime.now(UTC) + timedelta(seconds=1),
        )
    )
    k8s_run(deployment)
    assert DeploymentEvent.objects.filter(deployment=deployment, reason="FailedScheduling", type="Warning").exists()

    # Delete: Deployment, Service and Secret removed, pods gone, then the row.
    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    k8s_run(deployment)
    assert not cluster.deployments and not cluster.services and not cluster.pods and not cluster.secrets
    assert not Deployment.objects.filter(pk=deployment.pk).exists()


@pytest.mark.django_db
def test_orphaned_kubernetes_deployments_are_removed(cluster: FakeCluster, k8s_run: Any) -> None:
    deployment = DeploymentFactory(replicas=1, target__kind="kubernetes", target__kube_namespace="serving")
    k8s_run(deployment)
    Deployment.objects.filter(pk=deployment.pk).delete()
    driver = KubernetesDriver(
        apps=cluster.apps, core=cluster.core, namespace="serving", image="i", instance=instance_name()
    )
    assert reconciler.collect_orphans(driver) == [f"deployment {deployment.pk}"]
    assert not cluster.deployments and not cluster.services and not cluster.secrets


@pytest.mark.django_db
def test_a_rotated_secret_key_updates_the_secret_and_rolls_the_pods(
    cluster: FakeCluster, k8s_run: Any, settings: Any
) -> None:
    deployment = DeploymentFactory(replicas=1, target__kind="kubernetes", target__kube_namespace="serving")
    k8s_run(deployment)
    cluster.run_pods("serving", ready=True)
    k8s_run(deployment)
    old_token = replica_token(deployment.pk)
    [(_, name)] = cluster.secrets
    old_template = serialize(cluster.deployments[("serving", name)].spec.template)

    settings.SECRET_KEY = settings.SECRET_KEY + "-rotated"
    new_token = replica_token(deployment.pk)
    assert new_token != old_token
    k8s_run(deployment)
    assert base64.b64decode(cluster.secrets[("serving", name)].data["token"]).decode() == new_token
    assert serialize(cluster.deployments[("serving", name)].spec.template) != old_template
    assert name == resource_name(reconciler.replica_spec(deployment, slot=0))


def test_logs_and_check(cluster: FakeCluster) -> None:
    driver = KubernetesDriver(
        apps=cluster.apps, core=cluster.core, namespace="serving", image="i", instance="test_hangar"
    )
    driver.apply(spec(), 1)
    cluster.run_pods("serving", ready=False)
    [pod] = driver.list(42)
    assert pod.ready is False and pod.generation == 2
    cluster.logs[pod.name] = "a\nb\nhangar-runtime: stage=warming_up\n"
    assert driver.logs(pod.backend_id, tail=1) == "hangar-runtime: stage=warming_up"
    assert driver.stage(pod.backend_id).step == "warming_up"
    assert driver.check()["gpus"] == 4


@pytest.mark.kubernetes_live
@pytest.mark.skipif(not os.environ.get("HANGAR_TEST_KUBECONFIG"), reason="HANGAR_TEST_KUBECONFIG not set")
def test_live_cluster_apply_list_teardown() -> None:
    from kubernetes import config

    api = config.new_client_from_config(config_file=os.environ["HANGAR_TEST_KUBECONFIG"])
    namespace = os.environ.get("HANGAR_TEST_KUBE_NAMESPACE", "default")
    driver = KubernetesDriver(
        apps=k8s.AppsV1Api(api),
        core=k8s.CoreV1Api(api),
        namespace=namespace,
        image="hangar-runtime:latest",
        instance="test_live",
        version_api=k8s.VersionApi(api),
    )
    assert driver.check()["reachable"]
    try:
        driver.apply(spec(instance="test_live", deployment_id=999_001), 1)
        assert driver.known_deployment_ids() >= {999_001}
        driver.list(999_001)
    finally:
        driver.teardown(999_001)


@pytest.mark.django_db
def test_api_errors_map_to_failed_or_degraded(cluster: FakeCluster, k8s_run: Any, monkeypatch: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    deployment = DeploymentFactory(replicas=1, target__kind="kubernetes", target__kube_namespace="serving")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        exc = ApiException(status=403, reason="Forbidden")
        exc.body = '{"message": "deployments.apps is forbidden: User \\"hangar\\" cannot create"}'
        raise exc

    monkeypatch.setattr(cluster.apps, "create_namespaced_deployment", forbidden)
    k8s_run(deployment)
    assert deployment.phase == Phase.FAILED and "HTTP 403" in deployment.phase_message
    assert "cannot create" not in deployment.phase_message  # the API server's words stay in the log

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr(cluster.core, "list_namespaced_pod", unreachable)
    monkeypatch.setattr(cluster.apps, "read_namespaced_deployment", unreachable)
    outcome = k8s_run(deployment)
    assert outcome.temporary_error and deployment.phase == Phase.DEGRADED
    assert "unreachable" in deployment.phase_message


# ----------------------------------------------------------------------------- a model the pods fetch

FETCH_HASH = "c" * 64
FETCH_PLAN = json.dumps({"source": "s3://weights/tiny", "content_hash": FETCH_HASH, "manifest": []})
FETCH_SECRET = "tenant-s3-secret-value-0123456789"


def fetch_spec(limit: int = 0, **overrides: Any) -> ReplicaSpec:
    fetch = ModelFetch(
        content_hash=FETCH_HASH,
        plan=FETCH_PLAN,
        credentials=json.dumps({"access_key_id": "AKIA0", "secret_access_key": FETCH_SECRET}),
        cache_limit_bytes=limit,
    )
    return spec(model_path="", model_fetch=fetch, token="t0ken", **overrides)


@pytest.mark.parametrize("volume", [{}, {"cachePath": "/var/lib/hangar/model-cache"}])
def test_pods_of_a_remote_model_fetch_it_in_an_init_container(volume: dict[str, Any]) -> None:
    replica = fetch_spec(limit=10 * 1024**3 if volume else 0)
    deployment = serialize(
        build_deployment(replica, replicas=2, namespace="serving", image="hangar-runtime:latest", volume=volume)
    )
    secret = serialize(build_secret(replica, namespace="serving"))
    # The shipped manifests, init container included, are what the API server would accept.
    for manifest in (deployment, secret):
        kubernetes_validate.validate(manifest, K8S_SCHEMA_VERSION, strict=True)

    pod = deployment["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["name"] == "fetch-model" and init["image"] == "hangar-runtime:latest"
    assert init["command"] == ["python", "-m", "workers.runtime.fetch"]
    assert init["args"] == [
        "--plan",
        "/run/hangar-fetch/plan.json",
        "--credentials",
        "/run/hangar-fetch/credentials.json",
        "--cache",
        "/cache",
        "--limit-bytes",
        str(replica.model_fetch.cache_limit_bytes),
        "--termination-log",
        "/dev/termination-log",
    ]
    assert "env" not in init  # nothing of the plan or the credential in the pod's spec
    assert init["volumeMounts"] == [
        {"name": "model", "mountPath": "/cache"},
        {"name": "fetch-input", "mountPath": "/run/hangar-fetch", "readOnly": True},
    ]
    assert init["securityContext"]["runAsNonRoot"] is True and init["securityContext"]["runAsUser"] == 10001
    [container] = pod["containers"]
    # The runtime reads the verified model read-only, and never sees the fetch's input.
    assert container["volumeMounts"] == [
        {"name": "model", "mountPath": "/model", "readOnly": True, "subPath": f"models/{FETCH_HASH}"}
    ]
    assert container["args"][:2] == ["--model", "/model"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    if volume:
        assert volumes["model"] == {"name": "model", "hostPath": {"path": volume["cachePath"], "type": "Directory"}}
    else:
        assert volumes["model"] == {"name": "model", "emptyDir": {}}
    assert volumes["fetch-input"]["secret"] == {
        "secretName": deployment["metadata"]["name"],
        "items": [
            {"key": "fetch-plan.json", "path": "plan.json"},
            {"key": "fetch-credentials.json", "path": "credentials.json"},
        ],
        "defaultMode": 0o400,
    }
    assert FETCH_SECRET not in json.dumps(deployment)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["hangar.model-hash"] == FETCH_HASH
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert data["fetch-plan.json"] == FETCH_PLAN
    assert json.loads(data["fetch-credentials.json"])["secret_access_key"] == FETCH_SECRET
    assert data["token"] == "t0ken"


@pytest.fixture
def s3_model(db: Any) -> Any:
    tenant = TenantFactory()
    credential = catalog.source_credential_create(
        actor=SYSTEM,
        tenant=tenant,
        name="minio",
        kind="s3",
        region="eu-west-1",
        secret={"access_key_id": "AKIA1", "secret_access_key": FETCH_SECRET},
    )
    manifest = [{"name": "config.json", "size": 2, "sha256": "d" * 64}]
    return ModelFactory(
        tenant=tenant,
        source="s3://weights/tiny",
        credential=credential,
        manifest=manifest,
        content_hash=manifest_hash(manifest),
    )


@pytest.mark.django_db
def test_reconcile_a_remote_model_creates_the_fetch_secret_and_deletes_it_with_the_deployment(
    cluster: FakeCluster, k8s_run: Any, s3_model: Any
) -> None:
    target = TargetFactory(tenant=s3_model.tenant, kind="kubernetes", kube_namespace="serving")
    deployment = DeploymentFactory(tenant=s3_model.tenant, model=s3_model, target=target, replicas=2)
    k8s_run(deployment)
    [body] = [c[1][1] for c in cluster.calls if c[0] == "create_namespaced_deployment"]
    [secret] = cluster.secrets.values()
    plan = json.loads(base64.b64decode(secret.data["fetch-plan.json"]))
    assert plan == {
        "source": "s3://weights/tiny",
        "content_hash": s3_model.content_hash,
        "manifest": s3_model.manifest,
        "endpoint_url": "",
        "region": "eu-west-1",
    }
    assert json.loads(base64.b64decode(secret.data["fetch-credentials.json"])) == {
        "access_key_id": "AKIA1",
        "secret_access_key": FETCH_SECRET,
    }
    assert [c.name for c in body.spec.template.spec.init_containers] == ["fetch-model"]
    assert FETCH_SECRET not in json.dumps(serialize(body))

    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    k8s_run(deployment)
    assert not cluster.deployments and not cluster.secrets


@pytest.mark.django_db
def test_a_fetch_that_keeps_failing_fails_the_deployment_with_its_message(
    cluster: FakeCluster, k8s_run: Any, s3_model: Any
) -> None:
    target = TargetFactory(tenant=s3_model.tenant, kind="kubernetes", kube_namespace="serving")
    deployment = DeploymentFactory(tenant=s3_model.tenant, model=s3_model, target=target, replicas=1)
    k8s_run(deployment)
    cluster.run_pods("serving", ready=False)
    [pod] = cluster.pods.values()
    # What the kubelet reports for an init container that exited 4 and is backing off.
    pod.status.phase = "Pending"
    pod.status.init_container_statuses = [
        k8s.V1ContainerStatus(
            name="fetch-model",
            image="hangar-runtime:latest",
            image_id="",
            ready=False,
            restart_count=3,
            state=k8s.V1ContainerState(
                waiting=k8s.V1ContainerStateWaiting(reason="CrashLoopBackOff", message="back-off 40s")
            ),
            last_state=k8s.V1ContainerState(
                terminated=k8s.V1ContainerStateTerminated(
                    exit_code=4, reason="Error", message="SourceAccessDenied: The secret key is wrong."
                )
            ),
        )
    ]
    pod.status.container_statuses = [
        k8s.V1ContainerStatus(
            name="runtime",
            image="hangar-runtime:latest",
            image_id="",
            ready=False,
            restart_count=0,
            state=k8s.V1ContainerState(waiting=k8s.V1ContainerStateWaiting(reason="PodInitializing")),
        )
    ]
    k8s_run(deployment)
    assert deployment.phase == Phase.FAILED
    assert "the model fetch failed (exit code 4): SourceAccessDenied: The secret key is wrong." in (
        deployment.phase_message
    )
