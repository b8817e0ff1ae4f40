"""Who fetches a remote model for which target (``workers.model_store.fetch_site``), and what the
targets the worker does not share a filesystem with refuse: an upload in the platform's store
(on the control plane's disk) cannot reach a remote Docker host or a Kubernetes node, and the
deployment fails saying what to do instead, before any replica is started on a path that does
not exist there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.deployments.choices import Phase
from tests.factories import DeploymentFactory, ModelFactory, TargetFactory, TenantFactory
from workers import model_store
from workers.model_store import FetchSite

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("fields", "volumes_everywhere", "site"),
    [
        ({"kind": "local"}, False, FetchSite.WORKER),
        ({"kind": "docker", "docker_url": "unix:///var/run/docker.sock"}, False, FetchSite.WORKER),
        ({"kind": "docker", "docker_url": "unix:///var/run/docker.sock"}, True, FetchSite.DAEMON),
        ({"kind": "docker", "docker_url": "tcp://gpu-7.internal:2376"}, False, FetchSite.DAEMON),
        ({"kind": "docker", "docker_url": "ssh://deploy@gpu-7.internal"}, False, FetchSite.DAEMON),
        ({"kind": "kubernetes"}, False, FetchSite.POD),
    ],
)
def test_who_fetches_for_which_target(
    settings: Any, fields: dict[str, str], volumes_everywhere: bool, site: str
) -> None:
    settings.HANGAR_DOCKER_MODEL_VOLUMES = volumes_everywhere
    assert model_store.fetch_site(TargetFactory(**fields)) == site


def uploaded(settings: Any, tenant: Any) -> Any:
    folder = Path(settings.HANGAR_MODEL_STORE_DIR) / tenant.slug / "upload-1"
    folder.mkdir(parents=True)
    return ModelFactory(tenant=tenant, source=str(folder))


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "docker", "docker_url": "tcp://gpu-7.internal:2376"},
        {"kind": "docker", "docker_url": "ssh://deploy@gpu-7.internal"},
        {"kind": "kubernetes"},
    ],
)
def test_an_upload_is_refused_on_a_target_that_cannot_read_the_platforms_store(
    run: Any, fake_driver: Any, settings: Any, tmp_path: Path, fields: dict[str, str]
) -> None:
    settings.HANGAR_MODEL_STORE_DIR = str(tmp_path / "store")
    tenant = TenantFactory()
    model = uploaded(settings, tenant)
    target = TargetFactory(tenant=tenant, **fields)
    deployment = DeploymentFactory(tenant=tenant, model=model, target=target, replicas=1)
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert deployment.phase_message == (
        f"Model {model.name!r} was uploaded to the platform's store, which replicas on target {target.name!r} "
        f"({target.kind}) cannot read: register it from s3:// (or hf://) so that the target fetches it, "
        "or deploy it on a local target."
    )
    assert str(tmp_path) not in deployment.phase_message  # the store's location is not the tenant's business
    assert fake_driver.list(deployment.pk) == []


def test_an_upload_runs_on_a_local_target(run: Any, fake_driver: Any, settings: Any, tmp_path: Path) -> None:
    settings.HANGAR_MODEL_STORE_DIR = str(tmp_path / "store")
    tenant = TenantFactory()
    model = uploaded(settings, tenant)
    deployment = DeploymentFactory(tenant=tenant, model=model, target=TargetFactory(tenant=tenant), replicas=1)
    run(deployment)
    assert deployment.phase != Phase.FAILED, deployment.phase_message
    assert len(fake_driver.list(deployment.pk)) == 1


def test_a_backend_that_cannot_fetch_refuses_a_remote_model(run: Any, fake_driver: Any) -> None:
    tenant = TenantFactory()
    model = ModelFactory(
        tenant=tenant,
        source="s3://weights/tiny",
        content_hash="a" * 64,
        manifest=[{"name": "config.json", "size": 2, "sha256": "b" * 64}],
    )
    target = TargetFactory(tenant=tenant, kind="docker", docker_url="tcp://gpu-7.internal:2376")
    deployment = DeploymentFactory(tenant=tenant, model=model, target=target, replicas=1)
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert any(c.get("reason") == "ModelSourceUnsupported" for c in deployment.conditions), deployment.conditions
    assert "cannot fetch models" in deployment.phase_message
    assert fake_driver.list(deployment.pk) == []
