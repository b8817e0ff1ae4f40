"""A remote Docker host fetches a model itself: a container of the runtime image fills a volume per
model, replicas mount it read-only, the next replica only verifies it, a flipped byte is found and
fetched again, unused volumes are evicted least recently used first.

Real parts: the Docker daemon (reached over TCP through ``tests.support.docker_tcp``, so the worker
treats it as a remote host whose filesystem it cannot see), the runtime image built by
``deploy/images/build`` (the fetch command and the model server in it), a ``moto_server`` S3
endpoint with authentication listening on the Docker bridge's gateway (the containers' way to the
host), PostgreSQL and the channel layer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from controlplane.catalog import services as catalog
from controlplane.catalog.store.metadata import build_manifest
from controlplane.core.context import SYSTEM
from controlplane.core.realtime import deployment_group
from controlplane.deployments.choices import Phase, ProgressStep
from controlplane.deployments.models import Deployment, DeploymentEvent, ModelCacheEntry
from tests.factories import DeploymentFactory, TargetFactory, TenantFactory
from tests.support.channels import pushed
from tests.support.docker_tcp import docker_over_tcp
from tests.support.s3_server import S3Server, s3_server
from tests.support.waiting import wait_for
from tests.workers.docker_support import ensure_runtime_image, remove_test_containers
from workers import reconciler
from workers.drivers import instance_name
from workers.drivers.base import LABEL_DEPLOYMENT, LABEL_INSTANCE, ModelFetch, PermanentDriverError
from workers.drivers.docker import DockerDriver
from workers.drivers.docker_models import LABEL_ROLE, ROLE_FETCH, volume_name
from workers.runtime.store.manifest import manifest_hash
from workers.runtime.store.resolvers import FileResolver

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

READY_TIMEOUT = 180


@pytest.fixture(scope="module")
def runtime_image(docker_client: Any) -> str:
    return ensure_runtime_image(docker_client)


@pytest.fixture(scope="module")
def remote_url(docker_client: Any) -> Iterator[str]:
    with docker_over_tcp() as url:
        yield url


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second model for eviction: a config and 1 MiB of weights."""
    path = tmp_path_factory.mktemp("small-model")
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (path / "model.safetensors").write_bytes(hashlib.sha256(b"seed").digest() * 32768)
    return path


@pytest.fixture(scope="module")
def s3(
    docker_client: Any, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, small_model_dir: Path
) -> Iterator[S3Server]:
    gateway = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    with s3_server(tmp_path_factory.mktemp("s3"), host=gateway) as server:
        server.client().create_bucket(Bucket="weights")
        server.upload_dir(tiny_model_dir, bucket="weights", prefix="llama/tiny")
        server.upload_dir(small_model_dir, bucket="weights", prefix="small")
        yield server


@pytest.fixture
def remote(settings: Any, s3: S3Server, runtime_image: str, remote_url: str) -> str:
    settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP = True
    settings.HANGAR_MODEL_SOURCE_ENDPOINTS = [s3.url]
    return remote_url


def in_volume(client: Any, image: str, volume: str, script: str) -> str:
    """Run ``script`` (Python) in a throwaway container with ``volume`` at /v; its output."""
    output = client.containers.run(
        image,
        entrypoint=["python", "-c", script],
        volumes={volume: {"bind": "/v", "mode": "rw"}},
        labels={LABEL_INSTANCE: instance_name()},
        remove=True,
    )
    return bytes(output).decode().strip()


def events(deployment: Deployment, reason: str) -> list[DeploymentEvent]:
    return list(DeploymentEvent.objects.filter(deployment=deployment, reason=reason).order_by("created_at", "pk"))


def reconcile_until_running(deployment: Deployment, replicas: int) -> None:
    def step() -> bool:
        outcome = reconciler.reconcile(deployment.pk, owner="test-fetch")
        deployment.refresh_from_db()
        assert deployment.phase != Phase.FAILED, deployment.phase_message
        assert not outcome.temporary_error, outcome.temporary_error
        return deployment.phase == Phase.RUNNING and deployment.ready_replicas == replicas

    wait_for(step, timeout=READY_TIMEOUT, interval=0.5, message=f"Running with {replicas} ready replicas")


def replica_containers(client: Any, deployment: Deployment) -> list[Any]:
    filters = {"label": [f"{LABEL_INSTANCE}={instance_name()}", f"{LABEL_DEPLOYMENT}={deployment.pk}"]}
    return client.containers.list(all=True, filters=filters)


@pytest.mark.django_db(transaction=True)
def test_a_model_only_in_s3_runs_on_a_remote_host_from_a_volume_reused_and_repaired(
    docker_client: Any, remote: str, s3: S3Server, tiny_model_dir: Path, runtime_image: str
) -> None:
    tenant = TenantFactory()
    s3.credential(tenant)
    model = catalog.model_register(
        actor=SYSTEM, tenant=tenant, name="tiny", source="s3://weights/llama/tiny", credential="minio"
    )
    target = TargetFactory(tenant=tenant, kind="docker", docker_url=remote)
    deployment = DeploymentFactory(
        tenant=tenant, model=model, target=target, replicas=1, max_replicas=3, cpus=1.0, memory_mb=1024
    )
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(deployment_group(deployment.pk), channel)
    volume = volume_name(instance_name(), model.content_hash)

    # Cold: the host's fetch container fills the model's volume; the replica runs from it.
    reconcile_until_running(deployment, 1)
    [downloaded] = events(deployment, "ModelDownloaded")
    assert f"({model.size_bytes} bytes)" in downloaded.message
    steps = [
        m["progress"] for m in pushed(channel) if m.get("progress", {}).get("step") == ProgressStep.DOWNLOADING_MODEL
    ]
    assert steps, "the Downloading model step was pushed live"
    assert int(steps[-1]["bytes_done"]) == int(steps[-1]["bytes_total"]) == model.size_bytes
    labels = docker_client.volumes.get(volume).attrs["Labels"]
    assert labels["hangar.model-hash"] == model.content_hash and labels[LABEL_INSTANCE] == instance_name()
    [replica] = replica_containers(docker_client, deployment)
    [mount] = replica.attrs["Mounts"]
    assert (mount["Type"], mount["Name"], mount["Destination"], mount["RW"]) == ("volume", volume, "/model", False)
    assert replica.attrs["Config"]["Cmd"][:2] == ["--model", f"/model/models/{model.content_hash}"]
    assert [e.target_id for e in ModelCacheEntry.objects.filter(model=model)] == [target.pk]
    fetchers = docker_client.containers.list(all=True, filters={"label": f"{LABEL_ROLE}={ROLE_FETCH}"})
    assert [c.name for c in fetchers if c.labels.get(LABEL_INSTANCE) == instance_name()] == []  # removed when done

    # Warm: the second replica's fetch only verifies the volume; nothing is downloaded again.
    Deployment.objects.filter(pk=deployment.pk).update(replicas=2)
    reconcile_until_running(deployment, 2)
    assert len(events(deployment, "ModelDownloaded")) == 1
    assert events(deployment, "ModelRepaired") == []

    # A byte flipped in the volume is found before the next replica starts, and fetched again.
    flip = (
        f"p = '/v/models/{model.content_hash}/model.safetensors'; b = bytearray(open(p, 'rb').read()); "
        "b[len(b) // 2] ^= 0xFF; open(p, 'wb').write(b)"
    )
    in_volume(docker_client, runtime_image, volume, flip)
    Deployment.objects.filter(pk=deployment.pk).update(replicas=3)
    reconcile_until_running(deployment, 3)
    [repaired] = events(deployment, "ModelRepaired")
    assert "model.safetensors" in repaired.message and repaired.type == "Warning"
    downloads = events(deployment, "ModelDownloaded")
    assert len(downloads) == 2 and "fetched 1 file(s)" in downloads[-1].message
    digest = in_volume(
        docker_client,
        runtime_image,
        volume,
        f"import hashlib; print(hashlib.sha256(open('/v/models/{model.content_hash}/model.safetensors', 'rb')"
        ".read()).hexdigest())",
    )
    assert digest == hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    remove_test_containers(docker_client)


def request_for(s3: S3Server, model_dir: Path, prefix: str, secret: str = "") -> ModelFetch:
    resolver = FileResolver(model_dir)
    manifest = build_manifest(resolver, resolver.files())
    plan = {
        "source": f"s3://weights/{prefix}",
        "content_hash": manifest_hash(manifest),
        "manifest": manifest,
        "endpoint_url": s3.url,
        "region": "us-east-1",
    }
    credentials = {"access_key_id": s3.access_key, "secret_access_key": secret or s3.secret_key}
    return ModelFetch(content_hash=plan["content_hash"], plan=json.dumps(plan), credentials=json.dumps(credentials))


@pytest.mark.django_db
def test_the_credential_never_shows_in_docker_inspect_and_a_wrong_one_is_refused(
    docker_client: Any, remote: str, s3: S3Server, small_model_dir: Path, runtime_image: str
) -> None:
    driver = DockerDriver(url=remote, image=runtime_image, instance=instance_name(), name="gpu-7")
    request = request_for(s3, small_model_dir, "small")
    seen: list[dict[str, Any]] = []

    def inspect_fetcher(done: int, total: int, rate: float) -> None:
        filters = {"label": [f"{LABEL_INSTANCE}={instance_name()}", f"{LABEL_ROLE}={ROLE_FETCH}"]}
        seen.extend(
            docker_client.api.inspect_container(c.id) for c in docker_client.containers.list(all=True, filters=filters)
        )

    try:
        fetched = driver.fetch_model(request, on_progress=inspect_fetcher, heartbeat=lambda: None)
        assert fetched.downloaded_bytes == sum(e["size"] for e in json.loads(request.plan)["manifest"])
        assert seen, "the fetch container was inspected while it ran"
        for attrs in seen:
            assert s3.secret_key not in json.dumps(attrs)  # not in its command, environment or labels
            assert attrs["Config"]["Image"] == runtime_image
            assert attrs["Config"]["Entrypoint"] == ["python", "-m", "workers.runtime.fetch"]
            assert attrs["HostConfig"]["CapDrop"] == ["ALL"]
            assert [(m["Type"], m["Name"], m["Destination"], m["RW"]) for m in attrs["Mounts"]] == [
                ("volume", fetched.volume, "/cache", True)
            ]

        # Another deployment of the same model on this host: verified, not downloaded.
        again = driver.fetch_model(request, on_progress=lambda *_: None, heartbeat=lambda: None)
        assert (again.volume, again.downloaded_bytes, again.repaired) == (fetched.volume, 0, ())

        # A wrong secret matters once bytes must move: with the volume gone, the fetch is refused.
        docker_client.volumes.get(fetched.volume).remove()
        wrong = request_for(s3, small_model_dir, "small", secret="not-the-secret-" + "y" * 25)
        with pytest.raises(PermanentDriverError) as refused:
            driver.fetch_model(wrong, on_progress=lambda *_: None, heartbeat=lambda: None)
        assert (refused.value.reason, refused.value.message) == ("SourceAccessDenied", "The secret key is wrong.")
    finally:
        driver.close()


@pytest.mark.django_db
def test_unused_model_volumes_are_evicted_least_recently_used_first(
    docker_client: Any, remote: str, s3: S3Server, tiny_model_dir: Path, small_model_dir: Path, runtime_image: str
) -> None:
    driver = DockerDriver(url=remote, image=runtime_image, instance=instance_name(), name="gpu-7")
    try:
        tiny = driver.fetch_model(
            request_for(s3, tiny_model_dir, "llama/tiny"), on_progress=lambda *_: None, heartbeat=lambda: None
        )
        small_request = request_for(s3, small_model_dir, "small")
        small = driver.fetch_model(small_request, on_progress=lambda *_: None, heartbeat=lambda: None)
        tiny_hash = tiny.path.removeprefix("models/")
        small_bytes = sum(e["size"] for e in json.loads(small_request.plan)["manifest"])
        # The small model is the least recently used, but a container holds its volume: it stays.
        holder = docker_client.containers.create(
            runtime_image,
            entrypoint=["true"],
            volumes={small.volume: {"bind": "/model", "mode": "ro"}},
            labels={LABEL_INSTANCE: instance_name()},
        )
        last_used = {small_request.content_hash: 1.0, tiny_hash: 2.0}
        evicted = driver.evict_models(limit_bytes=small_bytes, keep="", last_used=last_used)
        assert evicted == [tiny_hash]
        names = {v.name for v in docker_client.volumes.list()}
        assert tiny.volume not in names and small.volume in names

        holder.remove()
        assert driver.evict_models(limit_bytes=small_bytes, keep="", last_used=last_used) == []  # fits
        assert driver.evict_models(limit_bytes=0, keep=small_request.content_hash, last_used=last_used) == []
        assert driver.evict_models(limit_bytes=0, keep="", last_used=last_used) == [small_request.content_hash]
        assert small.volume not in {v.name for v in docker_client.volumes.list()}
    finally:
        driver.close()
