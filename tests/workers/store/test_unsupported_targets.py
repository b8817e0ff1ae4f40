"""A remote source on a target whose nodes the worker cannot fetch for (a remote Docker host,
Kubernetes) fails the deployment with a clear reason instead of starting a replica on a path
that does not exist there."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.deployments.choices import Phase
from tests.factories import DeploymentFactory, ModelFactory, TargetFactory, TenantFactory

pytestmark = pytest.mark.django_db


def test_a_remote_docker_host_refuses_an_s3_model(run: Any, fake_driver: Any) -> None:
    tenant = TenantFactory()
    model = ModelFactory(tenant=tenant, source="s3://weights/tiny", content_hash="a" * 64)
    target = TargetFactory(tenant=tenant, kind="docker", docker_url="tcp://gpu-7.internal:2376")
    deployment = DeploymentFactory(tenant=tenant, model=model, target=target, replicas=1)
    run(deployment)
    assert deployment.phase == Phase.FAILED
    assert "no fetch step yet" in deployment.phase_message
    assert fake_driver.list(deployment.pk) == []
