"""A fetch on the target's side, as a hostile tenant would bend it: the tenant chooses a source
and its own credential, nothing else. Not the fetch's image, command, environment, volume or host
path (those derive from platform settings and the content hash, a sha256 checked before any call),
not another tenant's credential, not an endpoint the platform does not list, and not secret keys
the scheme does not read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.catalog import services as catalog
from controlplane.catalog.store.connect import model_fetch_plan
from controlplane.core.context import SYSTEM
from tests.factories import ModelFactory, TargetFactory, TenantFactory
from tests.support.ports import free_port
from tests.workers.drivers.test_kubernetes_driver import spec
from workers import model_store
from workers.drivers.base import ModelFetch, PermanentDriverError
from workers.drivers.docker import DockerDriver
from workers.drivers.kubernetes import build_deployment
from workers.runtime.store.manifest import manifest_hash
from workers.runtime.store.resolvers import SourceError
from workers.runtime.store.uris import parse_uri

pytestmark = pytest.mark.django_db

MANIFEST = [{"name": "config.json", "size": 2, "sha256": "d" * 64}]


def credential(tenant: Any, name: str = "s3", endpoint: str = "", secret: dict[str, str] | None = None) -> Any:
    return catalog.source_credential_create(
        actor=SYSTEM,
        tenant=tenant,
        name=name,
        kind="s3",
        endpoint_url=endpoint,
        secret=secret or {"access_key_id": "AKIA", "secret_access_key": f"{tenant.slug}-secret"},
    )


def remote_model(tenant: Any, cred: Any, source: str = "s3://weights/tiny") -> Any:
    return ModelFactory(
        tenant=tenant, source=source, credential=cred, manifest=MANIFEST, content_hash=manifest_hash(MANIFEST)
    )


@pytest.mark.parametrize("content_hash", ["../../etc", "A" * 64, "a" * 63, "a" * 64 + "/x", "hangar-model-other"])
def test_a_content_hash_that_is_not_a_sha256_never_reaches_the_daemon(settings: Any, content_hash: str) -> None:
    settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP = True
    # A port nobody listens on: any call to a daemon would fail as unreachable, not as refused.
    driver = DockerDriver(url=f"tcp://127.0.0.1:{free_port()}", image="hangar-runtime:latest", instance="test_x")
    with pytest.raises(PermanentDriverError) as refused:
        driver.fetch_model(
            ModelFetch(content_hash=content_hash, plan="{}"), on_progress=lambda *_: None, heartbeat=lambda: None
        )
    assert refused.value.reason == "BadModel"


def test_the_plan_holds_the_models_own_credential_and_only_the_keys_its_scheme_reads(settings: Any) -> None:
    settings.HANGAR_MODEL_SOURCE_ENDPOINTS = ["https://minio.internal"]
    me, victim = TenantFactory(), TenantFactory()
    credential(victim)
    mine = credential(me, endpoint="https://minio.internal")
    plan, secret = model_fetch_plan(remote_model(me, mine))
    assert secret == {"access_key_id": "AKIA", "secret_access_key": f"{me.slug}-secret"}
    assert plan["endpoint_url"] == "https://minio.internal"
    assert set(plan) == {"source", "content_hash", "manifest", "endpoint_url", "region"}
    assert parse_uri(plan["source"]).bucket == "weights"


def test_an_endpoint_the_platform_no_longer_lists_is_refused_at_fetch_time(settings: Any) -> None:
    settings.HANGAR_MODEL_SOURCE_ENDPOINTS = ["http://169.254.169.254"]  # a mistake, since corrected
    tenant = TenantFactory()
    model = remote_model(tenant, credential(tenant, endpoint="http://169.254.169.254"))
    settings.HANGAR_MODEL_SOURCE_ENDPOINTS = []
    with pytest.raises(SourceError) as refused:
        model_fetch_plan(model)
    assert refused.value.reason == "EndpointRefused"


def test_the_init_container_is_the_same_whatever_the_tenant_fetches() -> None:
    """Image, command, arguments and mounts of the fetch: the tenant's source and credential
    change the Secret's content only."""
    tenants = [TenantFactory(), TenantFactory()]
    containers = []
    for tenant, source in zip(tenants, ["s3://weights/tiny", "s3://other-bucket/a/b"], strict=True):
        model = remote_model(tenant, credential(tenant), source=source)
        target = TargetFactory(tenant=tenant, kind="kubernetes")
        request = model_store.fetch_request(model, target, node_cache=True)
        replica = spec(model_path="", model_fetch=request)
        body = build_deployment(replica, replicas=1, namespace="n", image="hangar-runtime:latest", volume={})
        [init] = body.spec.template.spec.init_containers
        containers.append((init.image, init.command, init.args, init.env, init.volume_mounts))
        assert tenant.slug not in json.dumps(str(containers[-1]))
    assert containers[0] == containers[1]
