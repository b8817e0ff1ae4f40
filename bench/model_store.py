"""Model store: time to Running from s3:// cold (empty node cache) vs warm cache vs file://, and
the cache's download throughput vs a plain boto3 download of the same files.

Real parts throughout: a ``moto_server`` S3 endpoint with real credentials, the tiny model built
by ``workers.runtime.tinymodel``, the local driver running the real runtime (``workers.runtime``,
torch included), the reconciler passes a worker runs (one every 0.25 s, as when converging).
Time to Running is measured from the first pass to phase Running; each figure is the median of
``--runs`` deployments (each deleted before the next). Throughput: ``ModelCache.ensure`` into an
empty cache (download + sha256 of every file + verification) vs boto3's ``download_file``
(s3transfer, threaded) of the same objects, on a synthetic model of ``--big-mb`` MiB, side by
side in one run.

    .venv/bin/python bench/model_store.py --runs 3
    .venv/bin/python bench/model_store.py --runs 3 --docker

``--docker``: the same three times to Running on a Docker target that the worker treats as a
remote host (the local daemon reached over TCP, ``tests.support.docker_tcp``), the real runtime
image: ``s3_cold`` is a fetch container filling a new volume, ``s3_warm`` a fetch container that
only verifies the volume, ``file`` a bind mount of a directory already on the host. Needs the
runtime image with the fetch command (``deploy/images/build``).

Uses its own database (``<name>_bench``). Results: stdout and ``artifacts/bench/model_store.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.test")
ARTIFACT = REPO / "artifacts" / "bench" / "model_store.json"
PASS_EVERY_S = 0.25


def setup_django(model_root: Path) -> None:
    os.environ["HANGAR_MODEL_ROOTS"] = str(model_root)
    import django

    django.setup()
    from django.db import connection

    connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_bench"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True)


def time_to_running(model: Any, target: Any, driver: Any) -> float:
    from controlplane.deployments.choices import Phase
    from controlplane.deployments.models import Deployment
    from tests.factories import DeploymentFactory
    from workers import reconciler

    deployment = DeploymentFactory(tenant=model.tenant, model=model, target=target, replicas=1, max_replicas=1)
    started = time.monotonic()
    try:
        while time.monotonic() - started < 300:
            reconciler.reconcile(deployment.pk, owner="bench", driver_factory=lambda *_, **__: driver)
            phase = Deployment.objects.values_list("phase", flat=True).get(pk=deployment.pk)
            if phase == Phase.RUNNING:
                return time.monotonic() - started
            if phase == Phase.FAILED:
                raise RuntimeError(Deployment.objects.get(pk=deployment.pk).phase_message)
            time.sleep(PASS_EVERY_S)  # pacing: the worker's own requeue interval while converging
        raise TimeoutError("not Running within 300 s")
    finally:
        for replica in driver.list(deployment.pk):
            driver.remove(replica.backend_id)
        Deployment.objects.filter(pk=deployment.pk).delete()


def big_model(path: Path, mib: int) -> Path:
    """A synthetic model: config.json and one safetensors file of ``mib`` MiB of random data."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    count = mib * 1024 * 1024 // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]}}).encode()
    with (path / "model.safetensors").open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        for _ in range(mib):
            fh.write(os.urandom(1024 * 1024))
    return path


def throughput(s3: Any, model: Any, work: Path) -> dict[str, float]:
    from controlplane.catalog.store.connect import model_resolver
    from workers.runtime.store.cache import ModelCache

    size = model.size_bytes
    cache_dir = work / "tp-cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache = ModelCache(cache_dir, 10 * size)
    started = time.monotonic()
    cache.ensure(model.content_hash, model.manifest, model_resolver(model))
    cache_s = time.monotonic() - started
    started = time.monotonic()
    cache.ensure(model.content_hash, model.manifest, model_resolver(model))
    verify_s = time.monotonic() - started  # warm: every file re-hashed against the manifest
    plain_dir = work / "tp-plain"
    shutil.rmtree(plain_dir, ignore_errors=True)
    plain_dir.mkdir()
    client = s3.client()
    started = time.monotonic()
    for entry in model.manifest:
        client.download_file("bench", f"big/{entry['name']}", str(plain_dir / entry["name"].replace("/", "_")))
    plain_s = time.monotonic() - started
    mib = size / 1024 / 1024
    return {
        "bytes": size,
        "cache_s": round(cache_s, 3),
        "cache_mib_s": round(mib / cache_s, 1),
        "boto3_s": round(plain_s, 3),
        "boto3_mib_s": round(mib / plain_s, 1),
        "cache_vs_boto3": round(plain_s / cache_s, 2),
        "warm_verify_s": round(verify_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=256)
    parser.add_argument("--docker", action="store_true", help="a remote Docker host instead of a local target")
    args = parser.parse_args()
    if args.docker:
        docker_main(args.runs)
        return
    work = Path(tempfile.mkdtemp(prefix="hangar-bench-store-"))
    model_root = work / "models"
    setup_django(model_root)

    from django.conf import settings

    from controlplane.catalog import services as catalog
    from controlplane.core.context import SYSTEM
    from tests.factories import TargetFactory, TenantFactory
    from tests.support.s3_server import s3_server
    from workers.drivers.local import LocalDriver
    from workers.runtime.tinymodel import build_tiny_model

    tenant = TenantFactory(slug=f"bench-store-{time.monotonic_ns()}")
    tiny = build_tiny_model(model_root / tenant.slug / "tiny")
    settings.HANGAR_MODEL_ROOTS = [str(model_root)]
    settings.HANGAR_MODEL_CACHE_DIR = str(work / "cache")
    driver = LocalDriver(state_dir=work / "replicas", instance="bench-store", runtime_module="workers.runtime")
    target = TargetFactory(tenant=tenant, kind="local", name=tenant.slug)
    with s3_server(work) as s3:
        settings.HANGAR_MODEL_SOURCE_ENDPOINTS = [s3.url]
        client = s3.client()
        client.create_bucket(Bucket="bench")
        s3.upload_dir(tiny, bucket="bench", prefix="tiny")
        s3.upload_dir(big_model(work / "big", args.big_mb), bucket="bench", prefix="big")
        secret = {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key}
        catalog.source_credential_create(
            actor=SYSTEM, tenant=tenant, name="moto", kind="s3", endpoint_url=s3.url, secret=secret
        )
        from_s3 = catalog.model_register(
            actor=SYSTEM, tenant=tenant, name="tiny-s3", source="s3://bench/tiny", credential="moto"
        )
        from_file = catalog.model_register(actor=SYSTEM, tenant=tenant, name="tiny-file", source=str(tiny))
        big = catalog.model_register(
            actor=SYSTEM, tenant=tenant, name="big", source="s3://bench/big", credential="moto"
        )
        cold, warm, local = [], [], []
        for _ in range(args.runs):
            shutil.rmtree(work / "cache", ignore_errors=True)
            cold.append(time_to_running(from_s3, target, driver))
            warm.append(time_to_running(from_s3, target, driver))
            local.append(time_to_running(from_file, target, driver))
        transfer = throughput(s3, big, work)
    result = {
        "runs": args.runs,
        "tiny_model_bytes": from_s3.size_bytes,
        "time_to_running_s": {
            "s3_cold": round(statistics.median(cold), 2),
            "s3_warm": round(statistics.median(warm), 2),
            "file": round(statistics.median(local), 2),
        },
        "all_runs_s": {"s3_cold": cold, "s3_warm": warm, "file": local},
        "throughput": transfer,
    }
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def fetch_only(client: Any, volume: str, runs: int, model: Any, target: Any, driver: Any) -> dict[str, float]:
    """The fetch step alone (``DockerDriver.fetch_model``: a container of the runtime image), medians:
    into a new volume, and over the filled one (verify only)."""
    import docker.errors

    from workers.model_store import fetch_request

    request = fetch_request(model, target, node_cache=False)
    cold, warm = [], []
    try:
        for _ in range(runs):
            with contextlib.suppress(docker.errors.NotFound):
                client.volumes.get(volume).remove()
            for times in (cold, warm):
                started = time.monotonic()
                driver.fetch_model(request, on_progress=lambda *_: None, heartbeat=lambda: None)
                times.append(time.monotonic() - started)
    finally:
        driver.close()
    return {"cold": round(statistics.median(cold), 2), "warm": round(statistics.median(warm), 2)}


def docker_runs(
    client: Any, volume: str, runs: int, models: tuple[Any, Any], target: Any, driver: Any
) -> tuple[list[float], list[float], list[float]]:
    """Times to Running: cold (the model's volume removed first), warm, and file://."""
    import docker.errors

    from_s3, from_file = models
    cold, warm, local = [], [], []
    try:
        for _ in range(runs):
            with contextlib.suppress(docker.errors.NotFound):
                client.volumes.get(volume).remove()
            cold.append(time_to_running(from_s3, target, driver))
            warm.append(time_to_running(from_s3, target, driver))
            local.append(time_to_running(from_file, target, driver))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(volume).remove()
        driver.close()
    return cold, warm, local


def docker_main(runs: int) -> None:
    import docker

    work = Path(tempfile.mkdtemp(prefix="hangar-bench-store-"))
    work.chmod(0o755)  # replicas (uid 10001) read the file:// model through it
    model_root = work / "models"
    setup_django(model_root)

    from django.conf import settings

    from controlplane.catalog import services as catalog
    from controlplane.core.context import SYSTEM
    from tests.factories import TargetFactory, TenantFactory
    from tests.support.docker_tcp import docker_over_tcp
    from tests.support.s3_server import s3_server
    from tests.workers.docker_support import readable_by_containers
    from workers.drivers import driver_for, instance_name
    from workers.drivers.docker_models import volume_name
    from workers.runtime.tinymodel import build_tiny_model

    client = docker.DockerClient(base_url="unix:///var/run/docker.sock")
    gateway = client.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    tenant = TenantFactory(slug=f"bench-store-{time.monotonic_ns()}")
    tiny = readable_by_containers(build_tiny_model(model_root / tenant.slug / "tiny"))
    for parent in (model_root, model_root / tenant.slug):
        parent.chmod(0o755)
    settings.HANGAR_MODEL_ROOTS = [str(model_root)]
    settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP = True
    with s3_server(work, host=gateway) as s3, docker_over_tcp() as url:
        settings.HANGAR_MODEL_SOURCE_ENDPOINTS = [s3.url]
        s3.client().create_bucket(Bucket="bench")
        s3.upload_dir(tiny, bucket="bench", prefix="tiny")
        secret = {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key}
        catalog.source_credential_create(
            actor=SYSTEM, tenant=tenant, name="moto", kind="s3", endpoint_url=s3.url, secret=secret
        )
        from_s3 = catalog.model_register(
            actor=SYSTEM, tenant=tenant, name="tiny-s3", source="s3://bench/tiny", credential="moto"
        )
        from_file = catalog.model_register(actor=SYSTEM, tenant=tenant, name="tiny-file", source=str(tiny))
        target = TargetFactory(tenant=tenant, kind="docker", docker_url=url, name=tenant.slug)
        volume = volume_name(instance_name(), from_s3.content_hash)
        fetch = fetch_only(client, volume, runs, from_s3, target, driver_for(target))
        cold, warm, local = docker_runs(client, volume, runs, (from_s3, from_file), target, driver_for(target))
    result = {
        "target": "docker over tcp (fetch container + volume)",
        "runs": runs,
        "tiny_model_bytes": from_s3.size_bytes,
        "time_to_running_s": {
            "s3_cold": round(statistics.median(cold), 2),
            "s3_warm": round(statistics.median(warm), 2),
            "file": round(statistics.median(local), 2),
        },
        "all_runs_s": {"s3_cold": cold, "s3_warm": warm, "file": local},
        "fetch_model_s": fetch,
    }
    artifact = ARTIFACT.with_name("model_store_docker.json")
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
