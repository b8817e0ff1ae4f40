"""The shipped stacks start: each process of deploy/compose.yaml and deploy/kubernetes loads the
production settings with exactly the environment those files give it, and every Kubernetes
manifest validates against the official schemas.

This is what broke when production began to require ``HANGAR_MODEL_ROOTS`` and neither file set
it: ``migrate`` stopped at ``ImproperlyConfigured`` and nothing in the suite noticed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
# What an operator exports before `compose up` (the file refuses to start without them).
OPERATOR_ENV = {
    "POSTGRES_PASSWORD": "p" * 24,
    "REDIS_PASSWORD": "r" * 24,
    "HANGAR_SECRET_KEY": "s" * 48,
    "HANGAR_KEY_PEPPER": "k" * 48,
    "HANGAR_ENCRYPTION_KEYS": "T0pS3cr3tKeyT0pS3cr3tKeyT0pS3cr3tKeyT0pS3cQ=",
    "DOCKER_GID": "999",
}
# The hangar-secrets Secret that deploy/kubernetes/README.md tells operators to create.
KUBE_SECRET = {
    "HANGAR_SECRET_KEY": "s" * 48,
    "HANGAR_KEY_PEPPER": "k" * 48,
    "HANGAR_ENCRYPTION_KEYS": "T0pS3cr3tKeyT0pS3cr3tKeyT0pS3cr3tKeyT0pS3cQ=",
    "DATABASE_URL": "postgres://hangar:PASSWORD@postgres.example:5432/hangar",
    "REDIS_URL": "redis://hangar:PASSWORD@redis.example:6379/0",
}
LOAD_SETTINGS = (
    "import django; django.setup(); from controlplane.core.crypto import decrypt_json, encrypt_json; "
    "assert decrypt_json(encrypt_json({'k': 'v'})) == {'k': 'v'}"
)
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, as ``compose up`` applies them."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"compose would refuse to start: {name} unset ({arg})")
        return arg or ""

    return _VAR.sub(one, value)


def settings_load(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Import the settings named by ``environment`` in a fresh interpreter with only that environment."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **environment}
    return subprocess.run(
        [sys.executable, "-c", LOAD_SETTINGS], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def compose_services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"])


@pytest.mark.parametrize("service", ["migrate", "web", "worker", "beat"])
def test_compose_process_loads_production_settings(service: str) -> None:
    spec = compose_services()[service]
    environment = {k: interpolate(str(v), OPERATOR_ENV) for k, v in spec["environment"].items()}
    assert environment["DJANGO_SETTINGS_MODULE"] == "console.settings.production"
    result = settings_load(environment)
    assert result.returncode == 0, f"{service} would not start:\n{result.stderr[-2000:]}"
    if service not in {"web", "worker"}:
        return
    # Web inspects model directories at registration, the worker hands them to replicas: the
    # roots they are given must be what compose mounts into their containers.
    mounted = [interpolate(v, OPERATOR_ENV).split(":")[1] for v in spec["volumes"]]
    roots = environment["HANGAR_MODEL_ROOTS"].split(",")
    assert roots and all(root in mounted for root in roots), (roots, mounted)


def kube_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_kubernetes_processes_load_production_settings() -> None:
    configmap = next(doc for _, doc in kube_documents() if doc["kind"] == "ConfigMap")
    environment = {**configmap["data"], **KUBE_SECRET}
    result = settings_load(environment)
    assert result.returncode == 0, f"the control plane would not start:\n{result.stderr[-2000:]}"
    # Every control-plane container takes its environment from that ConfigMap and the Secret.
    workloads = [doc for _, doc in kube_documents() if doc["kind"] in {"Deployment", "Job"}]
    assert len(workloads) >= 4
    for doc in workloads:
        for container in doc["spec"]["template"]["spec"]["containers"]:
            refs = {next(iter(ref.values()))["name"] for ref in container.get("envFrom", [])}
            assert refs == {"hangar-config", "hangar-secrets"}, (doc["metadata"]["name"], refs)


@pytest.mark.parametrize("path", sorted(p.name for p in KUBE.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_kubernetes_manifest_validates_strict(path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(KUBE / path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "INFO" in result.stdout or "PASSED" in result.stdout.upper(), result.stdout


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    shipped = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == shipped


def test_compose_redis_requires_a_password_and_the_control_plane_sends_it() -> None:
    services = compose_services()
    without = {k: v for k, v in OPERATOR_ENV.items() if k != "REDIS_PASSWORD"}
    # The redis service refuses to start without REDIS_PASSWORD (its entrypoint, too:
    # tests/deploy/test_redis_acl.py), and so does every control-plane process.
    redis_env = services["redis"]["environment"]
    assert interpolate(str(redis_env["REDIS_PASSWORD"]), OPERATOR_ENV) == OPERATOR_ENV["REDIS_PASSWORD"]
    for service in ("redis", "migrate", "web", "worker", "beat"):
        spec = services[service]
        with pytest.raises(AssertionError, match="REDIS_PASSWORD unset"):
            for value in spec.get("environment", {}).values():
                interpolate(str(value), without)
    url = interpolate(str(services["web"]["environment"]["REDIS_URL"]), OPERATOR_ENV)
    assert url.startswith(f"redis://hangar:{OPERATOR_ENV['REDIS_PASSWORD']}@127.0.0.1:")
    assert "command" not in services["redis"]  # the image's entrypoint, with its ACL


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "redis://hangar@127.0.0.1:6379/0"])
def test_production_refuses_a_redis_url_without_password(url: str) -> None:
    configmap = next(doc for _, doc in kube_documents() if doc["kind"] == "ConfigMap")
    result = settings_load({**configmap["data"], **KUBE_SECRET, "REDIS_URL": url})
    assert result.returncode != 0
    assert "REDIS_URL needs the Redis user and password" in result.stderr
