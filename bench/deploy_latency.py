"""Deploy latency: service call -> phase Running for the tiny model, local and Docker, plus healing.

Runs the real path: ``deployment_create`` (what the REST API calls) enqueues a reconcile, a real
``celery -A console worker -B`` picks it up, the driver starts the replica, the reconciler polls
``/health`` and writes Running. Each figure is the median of ``--runs`` deployments (each deleted
before the next). Healing: ``docker kill`` the replica of a Running deployment, then time until a
replacement container exists and until the deployment is Running again.

    eval "$(bash deploy/dev/services.sh env)"
    .venv/bin/python bench/deploy_latency.py --runs 5

Uses its own database (``<name>_bench``, created and migrated on first use) and broker database,
so it never touches a developer's data. Results: stdout and ``artifacts/bench/deploy_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.test")
BROKER_DB = 12
ARTIFACT = REPO / "artifacts" / "bench" / "deploy_latency.json"


def setup_django() -> None:
    import django
    from django.conf import settings

    django.setup()
    from django.db import connection

    del settings
    connection.settings_dict["TEST"]["NAME"] = f"{connection.settings_dict['NAME']}_bench"
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=True)


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"not done within {timeout} s")


def start_worker(data_dir: Path, log: Path, resync: float) -> subprocess.Popen[bytes]:
    from django.conf import settings
    from django.db import connection

    s = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "CELERY_BROKER_URL": settings.REDIS_URL.rsplit("/", 1)[0] + f"/{BROKER_DB}",
        "HANGAR_DATA_DIR": str(data_dir),
        "HANGAR_RESYNC_INTERVAL": str(resync),
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(REPO / ".venv/bin/celery"), "-A", "console", "worker", "-B", "--schedule", str(log.with_suffix(".db")),
             "--concurrency", "2", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_for(lambda: "ready." in log.read_text(errors="replace"), timeout=120)  # measure work, not boot
    return proc


def use_bench_broker() -> None:
    import redis
    from django.conf import settings

    from console.celery import app

    url = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    redis.Redis.from_url(url).flushdb()
    app.conf.broker_write_url = url  # what producers use (broker_url is already resolved into it)
    app._pool = None
    app.amqp._producer_pool = None


def deploy_once(kind: str, model_dir: Path, index: int, cpus: float) -> tuple[float, Any]:
    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services
    from controlplane.deployments.models import Deployment, DeploymentEvent
    from tests.factories import ModelFactory, TargetFactory, TenantFactory

    tenant = TenantFactory(slug=f"bench-{kind}-{index}-{time.monotonic_ns()}")
    model = ModelFactory(tenant=tenant, source=str(model_dir))
    target = TargetFactory(
        tenant=tenant, kind=kind, docker_url="unix:///var/run/docker.sock" if kind == "docker" else ""
    )
    started = time.monotonic()
    wall = time.time()
    deployment = services.deployment_create(
        actor=SYSTEM, tenant=tenant, model=model, target=target,
        data={"name": f"bench-{index}", "replicas": 1, "cpus": cpus},
    )  # fmt: skip

    def running() -> bool:
        d = Deployment.objects.get(pk=deployment.pk)
        if d.phase == "Failed":
            raise RuntimeError(d.phase_message)
        return d.phase == "Running"

    wait_for(running, timeout=300)
    elapsed = time.monotonic() - started
    marks = {
        reason: round(created.timestamp() - wall, 2)
        for reason, created in DeploymentEvent.objects.filter(deployment_id=deployment.pk).values_list(
            "reason", "created_at"
        )
        if reason in ("ReplicaCreated", "ReplicaReady")
    }
    print(
        f"[{kind}]   replica started +{marks.get('ReplicaCreated')} s, ready (as seen) +{marks.get('ReplicaReady')} s"
    )
    return elapsed, deployment


def delete(deployment: Any) -> None:
    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services
    from controlplane.deployments.models import Deployment

    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    wait_for(lambda: not Deployment.objects.filter(pk=deployment.pk).exists(), timeout=120)


def delete_async(deployment: Any) -> None:
    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services

    services.deployment_delete(actor=SYSTEM, deployment=deployment)


def heal_docker(deployment: Any) -> dict[str, float]:
    import docker

    from controlplane.deployments.models import Deployment
    from workers.drivers import instance_name

    client = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="auto")
    labels = [f"hangar.instance={instance_name()}", f"hangar.deployment={deployment.pk}"]
    [victim] = client.containers.list(filters={"label": labels})
    victim.kill()
    killed = time.monotonic()

    def replaced() -> bool:
        return any(c.id != victim.id for c in client.containers.list(filters={"label": labels}))

    wait_for(replaced, timeout=120)
    replaced_s = time.monotonic() - killed
    time.sleep(0.05)
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).phase == "Running"
             and Deployment.objects.get(pk=deployment.pk).ready_replicas == 1, timeout=300)  # fmt: skip
    return {"replacement_created_s": round(replaced_s, 2), "running_again_s": round(time.monotonic() - killed, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpus", type=float, default=2.0, help="CPU limit per replica (Docker)")
    parser.add_argument("--resync", type=float, default=15.0, help="HANGAR_RESYNC_INTERVAL of the worker")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-docker", action="store_true")
    args = parser.parse_args()

    setup_django()
    use_bench_broker()
    from workers.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="hangar-bench-"))
    model_dir = build_tiny_model(work / "tiny-llama")
    for path in [work, model_dir, *model_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    from controlplane.deployments.models import Deployment

    for leftover in Deployment.objects.all():  # from an interrupted run: let the worker clean up
        delete_async(leftover)
    worker = start_worker(work / "data", work / "worker.log", args.resync)
    wait_for(lambda: not Deployment.objects.exists(), timeout=120)
    results: dict[str, Any] = {"runs": args.runs, "resync_interval_s": args.resync, "cpus_per_replica": args.cpus}
    try:
        kinds = [k for k, skip in (("local", args.skip_local), ("docker", args.skip_docker)) if not skip]
        for kind in kinds:
            times = []
            last = None
            for index in range(args.runs):
                elapsed, deployment = deploy_once(kind, model_dir, index, args.cpus)
                times.append(elapsed)
                print(f"[{kind}] run {index + 1}: service call -> Running in {elapsed:.2f} s", flush=True)
                if kind == "docker" and index == args.runs - 1:
                    last = deployment
                else:
                    delete(deployment)
            results[kind] = {
                "to_running_median_s": round(statistics.median(times), 2),
                "to_running_min_s": round(min(times), 2),
                "to_running_max_s": round(max(times), 2),
                "to_running_all_s": [round(t, 2) for t in times],
            }
            if last is not None:
                results["docker"]["heal"] = heal_docker(last)
                print(f"[docker] heal after docker kill: {results['docker']['heal']}", flush=True)
                delete(last)
    finally:
        os.killpg(worker.pid, 9)
        worker.wait()
    print(json.dumps(results, indent=2))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
