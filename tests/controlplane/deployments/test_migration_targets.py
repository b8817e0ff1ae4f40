"""The data migration from per-tenant targets to platform targets granted to their tenants, run
on a database filled at the previous schema (deployments 0002, tenancy 0001)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.support.credentials import kubeconfig

OLD = [("deployments", "0002_reconcile_lease_and_host_port"), ("tenancy", "0001_initial")]


def migrate(targets: list[tuple[str, str]] | None = None) -> Any:
    """Migrate to ``targets`` (default: the latest of every app); the apps of the state reached."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets or executor.loader.graph.leaf_nodes())
    executor.loader.build_graph()  # see what was just applied
    applied = list(executor.recorder.applied_migrations())
    return executor.loader.project_state(applied).apps


@pytest.fixture
def old_schema() -> Iterator[Any]:
    apps = migrate(OLD)
    yield apps
    migrate()  # leave the database at the latest schema, whatever happened in the test


@pytest.mark.django_db(transaction=True)
def test_per_tenant_targets_become_platform_targets_granted_to_their_tenant(old_schema: Any, tmp_path: Path) -> None:
    apps = old_schema
    Tenant = apps.get_model("tenancy", "Tenant")
    Target = apps.get_model("deployments", "Target")
    Model = apps.get_model("catalog", "Model")
    Deployment = apps.get_model("deployments", "Deployment")
    assert {f.name for f in Target._meta.fields} >= {"tenant", "kubeconfig_path"}  # really the old schema

    acme, beta = Tenant.objects.create(name="Acme", slug="acme"), Tenant.objects.create(name="Beta", slug="beta")
    # Both tenants called their target "gpu": the older keeps the name, the other is renamed.
    acme_gpu = Target.objects.create(tenant=acme, name="gpu", kind="docker", docker_url="unix:///var/run/docker.sock")
    beta_gpu = Target.objects.create(tenant=beta, name="gpu", kind="local")
    config = kubeconfig(contexts=("prod",))
    config_file = tmp_path / "kubeconfig"
    config_file.write_text(config)
    beta_k8s = Target.objects.create(
        tenant=beta, name="cluster", kind="kubernetes", kubeconfig_path=str(config_file), kube_context="prod"
    )
    deployments = {}
    for tenant, target in ((acme, acme_gpu), (beta, beta_gpu), (beta, beta_k8s)):
        model = Model.objects.create(tenant=tenant, name=f"m-{target.pk}", source="/models/m")
        deployments[target.pk] = Deployment.objects.create(
            tenant=tenant, model=model, target=target, name=f"d-{target.pk}", served_model_name=f"d-{target.pk}"
        ).pk

    apps = migrate()

    Target = apps.get_model("deployments", "Target")
    TargetGrant = apps.get_model("deployments", "TargetGrant")
    Deployment = apps.get_model("deployments", "Deployment")
    assert "tenant" not in {f.name for f in Target._meta.fields}
    names = dict(Target.objects.values_list("pk", "name"))
    assert names == {acme_gpu.pk: "gpu", beta_gpu.pk: "gpu-beta", beta_k8s.pk: "cluster"}
    grants = set(TargetGrant.objects.values_list("target_id", "tenant__slug", "namespace"))
    assert grants == {(acme_gpu.pk, "acme", ""), (beta_gpu.pk, "beta", ""), (beta_k8s.pk, "beta", "")}
    for target_id, deployment_id in deployments.items():
        assert Deployment.objects.get(pk=deployment_id).target_id == target_id

    cluster = Target.objects.get(pk=beta_k8s.pk)
    assert cluster.kube_auth == "kubeconfig" and cluster.kube_context == "prod"
    # The path was tenant input: its file is never read in (it could be the worker's own
    # kubeconfig); a platform admin uploads one.
    assert cluster.credentials == ""
    assert Target.objects.get(pk=acme_gpu.pk).credentials == ""  # nothing to store for a socket
