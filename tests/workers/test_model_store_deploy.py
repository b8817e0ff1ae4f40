"""A deployment of a model that exists only in an S3 server (moto): the worker fetches it into the
node cache before the replica starts, verifies it, reuses it for the next replica without a second
download, and repairs a byte flipped in the cache. Real parts: moto's S3 endpoint, boto3, the
local driver's subprocesses, PostgreSQL and the channel layer (Redis)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from controlplane.catalog import services as catalog
from controlplane.core.context import SYSTEM
from controlplane.core.realtime import deployment_group
from controlplane.deployments.choices import ProgressStep
from controlplane.deployments.models import Deployment, DeploymentEvent, ModelCacheEntry
from tests.factories import DeploymentFactory, TargetFactory, TenantFactory
from tests.support.channels import pushed
from tests.support.hf_hub import fake_hub
from tests.support.s3_server import S3Server, s3_server
from workers import reconciler
from workers.drivers.local import LocalDriver

FAKE = "tests.workers.fake_runtime"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        server.client().create_bucket(Bucket="weights")
        server.upload_dir(tiny_model_dir, bucket="weights", prefix="llama/tiny")
        yield server


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LocalDriver]:
    drv = LocalDriver(state_dir=tmp_path / "replicas", instance="store-test", runtime_module=FAKE)
    yield drv
    for replica in drv.list():
        drv.remove(replica.backend_id)


def downloads(deployment: Deployment) -> list[str]:
    return list(
        DeploymentEvent.objects.filter(deployment=deployment, reason="ModelDownloaded")
        .order_by("created_at", "pk")
        .values_list("message", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_a_model_only_in_s3_is_fetched_verified_reused_and_repaired(
    s3: S3Server, tiny_model_dir: Path, driver: LocalDriver, settings: Any, tmp_path: Path
) -> None:
    settings.HANGAR_MODEL_SOURCE_ENDPOINTS = [s3.url]
    settings.HANGAR_MODEL_CACHE_DIR = str(tmp_path / "cache")
    tenant = TenantFactory()
    actor = SYSTEM
    s3.credential(tenant)
    model = catalog.model_register(
        actor=actor, tenant=tenant, name="tiny", source="s3://weights/llama/tiny", credential="minio"
    )
    target = TargetFactory(tenant=tenant, kind="local")
    deployment = DeploymentFactory(tenant=tenant, model=model, target=target, replicas=1, max_replicas=3)
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(deployment_group(deployment.pk), channel)

    def reconcile() -> None:
        outcome = reconciler.reconcile(deployment.pk, owner="store-test", driver_factory=lambda *_, **__: driver)
        assert not outcome.temporary_error, outcome.temporary_error
        deployment.refresh_from_db()

    # Cold: the worker fetches every file, verified, before the replica starts on the cache.
    reconcile()
    cached = Path(settings.HANGAR_MODEL_CACHE_DIR) / "models" / model.content_hash
    assert len(downloads(deployment)) == 1
    for entry in model.manifest:
        assert hashlib.sha256((cached / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    [replica] = driver.list(deployment.pk)
    assert replica.state == "running"
    steps = [
        m["progress"] for m in pushed(channel) if m.get("progress", {}).get("step") == ProgressStep.DOWNLOADING_MODEL
    ]
    assert steps, "the Downloading model step was pushed live"
    assert int(steps[-1]["bytes_done"]) == int(steps[-1]["bytes_total"]) == model.size_bytes
    assert [e.target_id for e in ModelCacheEntry.objects.filter(model=model)] == [target.pk]

    # Warm: a second replica verifies the cache and downloads nothing (files not even rewritten).
    stamps = {e["name"]: (cached / e["name"]).stat().st_mtime_ns for e in model.manifest}
    Deployment.objects.filter(pk=deployment.pk).update(replicas=2)
    reconcile()
    assert len(driver.list(deployment.pk)) == 2
    assert len(downloads(deployment)) == 1
    assert {e["name"]: (cached / e["name"]).stat().st_mtime_ns for e in model.manifest} == stamps

    # A byte flipped in the cache is detected before the next replica starts, and fetched again.
    weights = cached / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    Deployment.objects.filter(pk=deployment.pk).update(replicas=3)
    reconcile()
    assert len(driver.list(deployment.pk)) == 3
    repaired = DeploymentEvent.objects.get(deployment=deployment, reason="ModelRepaired")
    assert "model.safetensors" in repaired.message and repaired.type == "Warning"
    assert len(downloads(deployment)) == 2 and "fetched 1 file(s)" in downloads(deployment)[-1]
    assert weights.read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()


@pytest.mark.django_db(transaction=True)
def test_a_model_from_the_hub_is_fetched_at_its_pinned_commit(
    tiny_model_dir: Path, driver: LocalDriver, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # Building the session's tiny model switched this process to HF_HUB_OFFLINE, as replicas run.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    settings.HANGAR_MODEL_CACHE_DIR = str(tmp_path / "cache")
    tenant = TenantFactory()
    with fake_hub(tiny_model_dir) as hub:
        settings.HANGAR_MODEL_SOURCE_ENDPOINTS = [hub.url]
        catalog.source_credential_create(
            actor=SYSTEM, tenant=tenant, name="mirror", kind="hf", endpoint_url=hub.url, secret={}
        )
        model = catalog.model_register(
            actor=SYSTEM, tenant=tenant, name="tiny", source="hf://hangar/tiny-llama", credential="mirror"
        )
        # The branch moves after registration: nodes still fetch the commit that was registered.
        hub.branches["main"] = "f" * 40
        deployment = DeploymentFactory(tenant=tenant, model=model, target=TargetFactory(tenant=tenant), replicas=1)
        outcome = reconciler.reconcile(deployment.pk, owner="store-test", driver_factory=lambda *_, **__: driver)
    assert not outcome.temporary_error, outcome.temporary_error
    [replica] = driver.list(deployment.pk)
    cached = Path(settings.HANGAR_MODEL_CACHE_DIR) / "models" / model.content_hash
    assert (cached / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    fetched = [p for p in hub.hits if "/resolve/" in p]
    assert fetched and all(f"/resolve/{hub.commit}/" in p for p in fetched)
    assert replica.state == "running"
