"""Canary abort time and rolling-update surge, on the real stack (issue 13 items 3 and 4).

Runs a real ``celery -A console worker -B``, a real gateway (uvicorn on ``console.asgi``), real
runtime replicas of the tiny model on the local driver, and users as threads of the ``openai``
client sending chat completions through the gateway.

1. **Canary abort time.** A deployment of 2 replicas with a canary policy (20 %, analysis after
   20 canary requests, error rate at most +10 %); a platform admin switches faults on (30 % of the
   new revision's requests answer 500). Measured per run: from the first failed request a client
   saw to the moment the rollout was marked RolledBack (traffic back to stable), and to the last
   failed request any client saw; failures and requests in between.
2. **Extra replicas during a rolling update**, side by side in one run: the same update of a
   3-replica deployment with ``max_surge=1`` (``max_unavailable=0``) and with ``max_surge=100%``
   (what every rollout cost before: all new replicas at once). Sampled from the local driver
   every 50 ms: the most replicas alive at once beyond the desired count, the fewest ready
   replicas, and the rollout's duration.

    eval "$(bash deploy/dev/services.sh env)"
    .venv/bin/python bench/canary_rollout.py --runs 3

Uses its own database (``<name>_bench``) and broker database, like ``deploy_latency.py``.
Results: stdout and ``artifacts/bench/canary_rollout.json``.

Figures of 2026-11-30, ``--runs 2`` on the quiet 2-core development machine:

- Canary abort: first failed request to RolledBack 1.43 s and 1.27 s; 11 of 1,135 and 9 of
  1,215 client requests failed; judged after 20 and 27 canary requests.
- Rolling update of 3 replicas: ``max_surge=1`` at most **1** extra replica alive, never below 3
  ready, 31.4 s; ``max_surge=100%`` 3 extra, 9.2 s. Before commit 8150667 the same run showed
  2 extra for ``max_surge=1`` (25.3 s): a replaced replica still draining was not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.test")
os.environ["HANGAR_FAULT_INJECTION"] = "true"  # the worker started below applies faults
ARTIFACT = REPO / "artifacts" / "bench" / "canary_rollout.json"

from deploy_latency import setup_django, start_worker, use_bench_broker, wait_for  # noqa: E402


def start_gateway(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    from django.db import connection

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.controlplane.gateway.settings",
        "HANGAR_GATEWAY_TEST_DB": str(connection.settings_dict["NAME"]),
        "HANGAR_GATEWAY_REDIS_PREFIX": f"hangar:bench:{os.getpid()}:",
    }
    argv = [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--lifespan", "on", "--no-access-log", "--log-level", "warning"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    def up() -> bool:
        try:
            return httpx.get(url + "/v1/models", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60, interval=0.2)
    return proc, url


def deployment_of(model_dir: Path, name: str, replicas: int, policy: dict[str, Any]) -> tuple[Any, str]:
    from controlplane.core.context import SYSTEM
    from controlplane.deployments import rollouts, services
    from controlplane.deployments.models import Deployment
    from tests.factories import ApiKeyFactory, ModelFactory, TargetFactory, TenantFactory

    tenant = TenantFactory(slug=f"bench-{name}-{time.monotonic_ns()}")
    model = ModelFactory(tenant=tenant, source=str(model_dir))
    target = TargetFactory(tenant=tenant, kind="local", name=f"bench-{time.monotonic_ns()}")  # unique across runs
    deployment = services.deployment_create(
        actor=SYSTEM, tenant=tenant, model=model, target=target,
        data={"name": name, "served_model_name": name, "replicas": replicas, "max_replicas": 8, "max_batch_size": 8},
    )  # fmt: skip
    rollouts.rollout_policy_set(actor=SYSTEM, deployment=deployment, data=policy)
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).phase == "Running", timeout=300, interval=0.2)
    return deployment, ApiKeyFactory(tenant=tenant, name="bench").secret


class Users:
    """Threads sending chat completions; remember when each failure happened."""

    def __init__(self, url: str, token: str, model: str, count: int) -> None:
        import openai

        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)
        self.model = model
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[float] = []
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def loop(self) -> None:
        import openai

        while not self.stop.is_set():
            try:
                self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
                )
            except openai.APIError:
                with self.lock:
                    self.failures.append(time.time())
                continue
            with self.lock:
                self.ok += 1

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def canary_abort(deployment: Any, url: str, token: str, name: str) -> dict[str, Any]:
    from controlplane.core.context import Actor
    from controlplane.deployments import revisions
    from controlplane.deployments.models import Deployment, Replica, Rollout
    from tests.factories import PlatformAdminFactory

    admin = Actor(user=PlatformAdminFactory(), via="api")
    deployment = revisions.deployment_faults_set(actor=admin, deployment=deployment, faults={"error_rate": 0.3})
    canary = deployment.template_generation
    wait_for(
        lambda: Replica.objects.filter(deployment=deployment, generation=canary, state="ready").exists(),
        timeout=300,
        interval=0.1,
    )
    users = Users(url, token, name, 4)
    try:
        wait_for(lambda: Deployment.objects.get(pk=deployment.pk).phase == "RolledBack", timeout=300, interval=0.05)
        wait_for(lambda: not Replica.objects.filter(deployment=deployment, generation=canary).exists(), timeout=120)
        time.sleep(2.0)  # keep the users a little longer: any failure after the abort would show
    finally:
        users.close()
    rollout = Rollout.objects.filter(deployment=deployment).order_by("-id").first()
    assert rollout is not None and rollout.finished_at is not None
    first, last = min(users.failures), max(users.failures)
    aborted = rollout.finished_at.timestamp()
    return {
        "abort_after_first_failure_s": round(aborted - first, 2),
        "last_failure_after_first_s": round(last - first, 2),
        "client_failures": len(users.failures),
        "client_requests": users.ok + len(users.failures),
        "canary_requests_judged": rollout.analysis.get("canary", {}).get("requests"),
        "reason": rollout.reason,
    }


def rolling(model_dir: Path, surge: str, data_dir: Path) -> dict[str, Any]:
    from django.test import override_settings

    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services
    from controlplane.deployments.models import Deployment, Rollout
    from workers.drivers import local_driver

    replicas = 3
    name = "surge-" + surge.replace("%", "pct")
    deployment, _ = deployment_of(model_dir, name, replicas, {"max_surge": surge, "max_unavailable": "0"})
    most, fewest_ready = replicas, replicas
    started = time.monotonic()
    services.deployment_update(actor=SYSTEM, deployment=deployment, data={"max_batch_size": 16})
    with override_settings(DATA_DIR=data_dir):
        driver = local_driver()
        while True:
            alive = [r for r in driver.list(deployment.pk) if r.alive]
            most = max(most, len(alive))
            d = Deployment.objects.get(pk=deployment.pk)
            fewest_ready = min(fewest_ready, d.ready_replicas)
            rollout = Rollout.objects.filter(deployment=deployment).order_by("-id").first()
            if rollout is not None and rollout.state == "Completed":
                break
            if time.monotonic() - started > 600:
                raise TimeoutError("rolling update not completed in 600 s")
            time.sleep(0.05)  # pacing: the sampling interval
    elapsed = time.monotonic() - started
    services.deployment_delete(actor=SYSTEM, deployment=deployment)
    return {
        "max_surge": surge,
        "replicas": replicas,
        "extra_replicas_max": most - replicas,
        "fewest_ready": fewest_ready,
        "duration_s": round(elapsed, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="canary aborts to time")
    parser.add_argument("--resync", type=float, default=5.0, help="HANGAR_RESYNC_INTERVAL of the worker")
    args = parser.parse_args()

    setup_django()
    use_bench_broker()
    from django.conf import settings

    settings.HANGAR_FAULT_INJECTION = True  # this process writes the faults
    from workers.runtime.tinymodel import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="hangar-bench-"))
    # Under the data directory's shared model root: the worker starts replicas only from there.
    model_dir = build_tiny_model(work / "data" / "models" / "_shared" / "tiny-llama")
    for path in [work, *model_dir.parents[:3], model_dir, *model_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services
    from controlplane.deployments.models import Deployment

    for leftover in Deployment.objects.all():  # from an interrupted run: let the worker clean up
        services.deployment_delete(actor=SYSTEM, deployment=leftover)
    worker = start_worker(work / "data", work / "worker.log", args.resync)
    gateway, url = start_gateway(work / "gateway.log")
    results: dict[str, Any] = {"runs": args.runs}
    try:
        wait_for(lambda: not Deployment.objects.exists(), timeout=120)
        policy = {
            "strategy": "canary",
            "steps": [{"weight": 20, "pause_seconds": 3600}, {"weight": 100}],
            "analysis": {"min_requests": 20, "max_error_rate": 0.1},
        }
        deployment, token = deployment_of(model_dir, "canary", 2, policy)
        aborts = []
        for index in range(args.runs):
            aborts.append(canary_abort(deployment, url, token, "canary"))
            print(f"[canary] run {index + 1}: {aborts[-1]}", flush=True)
        times = [a["abort_after_first_failure_s"] for a in aborts]
        results["canary_abort"] = {
            "abort_after_first_failure_median_s": round(statistics.median(times), 2),
            "abort_after_first_failure_all_s": times,
            "client_failures_all": [a["client_failures"] for a in aborts],
            "runs": aborts,
        }
        services.deployment_delete(actor=SYSTEM, deployment=deployment)
        results["rolling_update"] = [rolling(model_dir, surge, work / "data") for surge in ("1", "100%")]
        for row in results["rolling_update"]:
            print(f"[rolling] {row}", flush=True)
        wait_for(lambda: not Deployment.objects.exists(), timeout=180)
    finally:
        os.killpg(gateway.pid, 9)
        os.killpg(worker.pid, 9)
        gateway.wait()
        worker.wait()
    print(json.dumps(results, indent=2))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
