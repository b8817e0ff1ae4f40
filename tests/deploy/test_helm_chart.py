"""The Helm chart (deploy/helm/hangar), rendered offline with Helm's own library: it lints clean,
every manifest validates against the Kubernetes schemas with ``--strict``, and each process
would start with the environment the chart gives it, for the default values, the production-like
values in ``ci/production-values.yaml`` and the bundled databases.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.test_stack_config import KUBE_SECRET, settings_load

CHART = REPO_ROOT / "deploy" / "helm" / "hangar"
ENTRYPOINT = REPO_ROOT / "deploy" / "console" / "entrypoint.sh"
RELEASE, NAMESPACE = "hangar", "hangar-system"
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "production": yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text()),
    "bundled": {"postgresql": {"enabled": True}, "redis": {"enabled": True}},
}
SECRET_KEYS = {"HANGAR_SECRET_KEY", "HANGAR_KEY_PEPPER", "HANGAR_ENCRYPTION_KEYS"}
_CACHE: dict[str, list[tuple[str, dict[str, Any]]]] = {}


def render(values_name: str) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for every object the chart renders with the named values."""
    if values_name not in _CACHE:
        with helm_python.Chart.load(CHART) as chart:
            manifests = chart.render(values=VALUE_SETS[values_name], name=RELEASE, namespace=NAMESPACE)
        _CACHE[values_name] = [
            (path, doc)
            for path, text in sorted(manifests.items())
            if path.endswith(".yaml")
            for doc in yaml.safe_load_all(text)
            if doc
        ]
    return _CACHE[values_name]


def objects(values_name: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in render(values_name) if doc["kind"] == kind}


def workloads(values_name: str) -> dict[str, dict[str, Any]]:
    """Control-plane workloads by component: web, worker, beat (Deployments) and migrate (Job)."""
    found = {}
    for kind in ("Deployment", "Job"):
        for doc in objects(values_name, kind).values():
            found[doc["metadata"]["labels"]["app.kubernetes.io/component"]] = doc
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def secret_for(values_name: str) -> dict[str, str]:
    """The keys NOTES.txt and values.yaml tell operators to put in the existing Secret."""
    values = VALUE_SETS[values_name]
    secret = dict(KUBE_SECRET)
    if values.get("postgresql", {}).get("enabled"):
        del secret["DATABASE_URL"]
        secret["POSTGRES_PASSWORD"] = "p" * 24
    if values.get("redis", {}).get("enabled"):
        del secret["REDIS_URL"]
        secret["REDIS_PASSWORD"] = "r" * 24
    return secret


def environment(values_name: str, component: str) -> dict[str, str]:
    """What the kubelet gives the container: envFrom (ConfigMap, Secret), then env with $(VAR) expanded."""
    spec = container(workloads(values_name)[component])
    configmaps = objects(values_name, "ConfigMap")
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]]["data"])
        else:
            env.update(secret_for(values_name))
    for var in spec.get("env", []):
        assert "value" in var, var
        env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
    return env


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_chart_lints_clean(values_name: str) -> None:
    report = helm_python.lint(CHART, VALUE_SETS[values_name], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_rendered_manifests_validate_strict(values_name: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{values_name}.yaml"
    manifest.write_text(yaml.safe_dump_all([doc for _, doc in render(values_name)]))
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(render(values_name)), result.stdout


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_processes_load_production_settings(values_name: str) -> None:
    # Every process gets the same settings, whether from the ConfigMap or (the migration hook,
    # which runs before the ConfigMap exists) from env: so one start-up in a fresh interpreter
    # stands for all four.
    env = environment(values_name, "web")
    for component in ("worker", "beat", "migrate"):
        assert environment(values_name, component) == env, component
    assert env["DJANGO_SETTINGS_MODULE"] == "console.settings.production"
    result = settings_load(env)
    assert result.returncode == 0, f"the control plane would not start:\n{result.stderr[-2000:]}"


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_model_roots_are_mounted_where_settings_say(values_name: str) -> None:
    for component in ("web", "worker"):
        env = environment(values_name, component)
        mounts = {m["mountPath"] for m in container(workloads(values_name)[component])["volumeMounts"]}
        assert set(env["HANGAR_MODEL_ROOTS"].split(",")) <= mounts, (component, mounts)
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in workloads("production")["worker"]["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["hangar-models"]


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_web_probes_use_the_health_endpoints(values_name: str) -> None:
    web = container(workloads(values_name)["web"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = web[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "http")
        host = next(h["value"] for h in get["httpHeaders"] if h["name"] == "Host")
        assert host in environment(values_name, "web")["HANGAR_ALLOWED_HOSTS"].split(",")
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in web["ports"]


def test_worker_liveness_is_the_heartbeat_check() -> None:
    worker = container(workloads("default")["worker"])
    assert worker["livenessProbe"]["exec"]["command"] == ["hangar", "worker-alive", "60"]
    heartbeat = environment("default", "worker")["HANGAR_WORKER_HEARTBEAT_FILE"]
    writable = {m["mountPath"] for m in worker["volumeMounts"] if not m.get("readOnly")}
    assert str(Path(heartbeat).parent) in writable  # the root filesystem is read-only
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_beat_is_single_and_uses_the_leader_scheduler(values_name: str) -> None:
    beat = workloads(values_name)["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert container(beat)["args"] == ["beat"]
    branch = ENTRYPOINT.read_text().split("    beat)", 1)[1].split(";;", 1)[0]
    assert "--scheduler console.beat:LeaderScheduler" in branch
    assert environment(values_name, "beat")["HANGAR_BEAT_LEASE_SECONDS"] == "30"


def test_web_replicas_belong_to_the_autoscaler_when_enabled() -> None:
    assert workloads("default")["web"]["spec"]["replicas"] == 2
    assert objects("default", "HorizontalPodAutoscaler") == {}
    web = workloads("production")["web"]
    assert "replicas" not in web["spec"]
    (hpa,) = objects("production", "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hangar-web"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    # The HPA scales on CPU utilization, which needs a CPU request on the container.
    assert container(web)["resources"]["requests"]["cpu"] == "1"


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_migrations_run_as_a_hook_before_the_new_pods(values_name: str) -> None:
    job = workloads(values_name)["migrate"]
    annotations = job["metadata"]["annotations"]
    bundled = values_name == "bundled"  # no database exists before install: run after it
    expected = "post-install,pre-upgrade" if bundled else "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook"] == expected
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert container(job)["args"] == ["migrate"]
    # A hook runs before the release's ConfigMap and ServiceAccount exist.
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]
    assert [s for s in container(job)["envFrom"] if "configMapRef" in s] == []


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_secrets_are_referenced_never_rendered(values_name: str) -> None:
    rendered = render(values_name)
    assert [doc["metadata"]["name"] for _, doc in rendered if doc["kind"] == "Secret"] == []
    existing = VALUE_SETS[values_name].get("secrets", {}).get("existingSecret", "hangar-secrets")
    for component, workload in workloads(values_name).items():
        spec = container(workload)
        refs = [s["secretRef"]["name"] for s in spec["envFrom"] if "secretRef" in s]
        assert refs == [existing], component
        assert not SECRET_KEYS & {v["name"] for v in spec.get("env", [])}, component
    for configmap in objects(values_name, "ConfigMap").values():
        assert not SECRET_KEYS & set(configmap["data"]), "secret settings in a ConfigMap"
        assert not any("://" in v and "@" in v for v in configmap["data"].values()), "credentials in a URL"


def test_driver_rbac_is_namespaced_to_the_models_namespaces() -> None:
    assert objects("production", "ClusterRole") == {} and objects("production", "ClusterRoleBinding") == {}
    roles = [doc for _, doc in render("production") if doc["kind"] == "Role"]
    bindings = [doc for _, doc in render("production") if doc["kind"] == "RoleBinding"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["hangar-models", "hangar-models-gpu"]
    rules = {(g, res): set(r["verbs"]) for r in roles[0]["rules"] for g in r["apiGroups"] for res in r["resources"]}
    assert rules[("apps", "deployments")] >= {"get", "list", "create", "update", "patch", "delete"}
    assert rules[("", "services")] >= {"get", "list", "create", "update", "patch", "delete"}
    assert rules[("", "secrets")] >= {"get", "create", "delete"}
    assert rules[("", "pods")] == rules[("", "events")] == {"get", "list", "watch"}
    assert rules[("", "pods/log")] == {"get"}
    (account,) = objects("production", "ServiceAccount")
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    # Only the worker, the one process that calls the Kubernetes API, mounts the token.
    tokens = {
        component: w["spec"]["template"]["spec"].get("automountServiceAccountToken")
        for component, w in workloads("production").items()
    }
    assert tokens == {"web": False, "worker": True, "beat": False, "migrate": False}


def test_replicas_admit_only_the_control_plane() -> None:
    policies = [doc for _, doc in render("production") if doc["kind"] == "NetworkPolicy"]
    replicas = [p for p in policies if p["metadata"].get("namespace", NAMESPACE) != NAMESPACE]
    assert sorted(p["metadata"]["namespace"] for p in replicas) == ["hangar-models", "hangar-models-gpu"]
    for policy in replicas:
        spec = policy["spec"]
        assert {"key": "hangar.deployment", "operator": "Exists"} in spec["podSelector"]["matchExpressions"]
        assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["egress"] == []
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
        (components,) = peer["podSelector"]["matchExpressions"]
        assert components["values"] == ["web", "worker"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    # Control plane: web only from the ingress controller's namespace, worker and beat from nobody.
    by_name = {p["metadata"]["name"]: p["spec"] for p in policies}
    assert by_name["hangar-web"]["ingress"][0]["from"] == VALUE_SETS["production"]["networkPolicy"]["webFrom"]
    assert by_name["hangar-background"]["ingress"] == []


def test_bundled_databases_are_off_by_default_and_reachable_only_by_the_control_plane() -> None:
    assert objects("default", "StatefulSet") == {}
    assert set(objects("bundled", "StatefulSet")) == {"hangar-postgresql", "hangar-redis"}
    policies = objects("bundled", "NetworkPolicy")
    for name, port in (("hangar-postgresql", 5432), ("hangar-redis", 6379)):
        (rule,) = policies[name]["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
        assert rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    env = environment("bundled", "web")
    assert env["DATABASE_URL"] == f"postgres://hangar:{'p' * 24}@hangar-postgresql:5432/hangar"
    assert env["REDIS_URL"] == f"redis://hangar:{'r' * 24}@hangar-redis:6379/0"
    # The bundled Redis gets the same password from the Secret, and runs the image's
    # entrypoint, which refuses to start without one (tests/deploy/test_redis_acl.py).
    redis = container(objects("bundled", "StatefulSet")["hangar-redis"])
    assert "args" not in redis and "command" not in redis
    (password,) = redis["env"]
    assert password["name"] == "REDIS_PASSWORD"
    assert password["valueFrom"]["secretKeyRef"] == {"name": "hangar-secrets", "key": "REDIS_PASSWORD"}


@pytest.mark.parametrize("values_name", VALUE_SETS)
def test_pods_request_resources_and_disruption_budgets_cover_web_and_worker(values_name: str) -> None:
    for _, doc in render(values_name):
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["resources"]["requests"].get("memory"), (doc["metadata"]["name"], c["name"])
                assert c["resources"]["requests"].get("cpu"), (doc["metadata"]["name"], c["name"])
    budgets = objects(values_name, "PodDisruptionBudget")
    assert {b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for b in budgets.values()} == {
        "web",
        "worker",
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"web": {"replicas": "two"}},
        {"web": {"replica": 2}},  # a typo is an error, not an ignored key
        {"secrets": {"existingSecret": ""}},
        {"config": {"extra": {"HANGAR_SECRET_KEY": "x" * 40}}},  # secrets never go in values
        {"autoscaling": {"enabled": "yes"}},
        {"models": {"namespaces": ["Not_A_Namespace"]}},
    ],
)
def test_values_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(VALUE_SETS["default"])
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema(chart.merge_values(bad))
    report = helm_python.lint(CHART, bad, namespace=NAMESPACE)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"]), report
