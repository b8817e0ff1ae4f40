"""Autoscaling figures on the tiny model: load step -> scale-up decision -> new replica ready,
requests dropped during the ramp and the scale-down, and the cold start from zero.

The real path: a ``celery -A console worker -B`` (reconciler, scraper, autoscaler) running local
replicas, a gateway process (uvicorn on ``console.asgi``), and clients using the ``openai``
package with retries off (what they see is what the gateway answered):

1. an autoscaled deployment (min 1, max 3, target 8 in flight, panic 3 s, stable 10 s,
   scale-down stabilization 20 s) under one stream, then a step to ``--streams`` streams;
2. the load stops; the count comes back to 1 after the stabilization window (replicas drain);
3. the deployment idles to zero, then one request wakes it: the time until its answer.

    .venv/bin/python bench/autoscale.py --streams 32

Uses its own database (``<name>_bench``) and broker database like ``bench/deploy_latency.py``.
Results: stdout and ``artifacts/bench/autoscale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_latency import REPO, setup_django, start_worker, use_bench_broker, wait_for

ARTIFACT = REPO / "artifacts" / "bench" / "autoscale.json"
WORKER_ENV = {
    "HANGAR_METRICS_INTERVAL": "0.5",
    "HANGAR_REPLICA_DRAIN_SECONDS": "60",
    "HANGAR_GATEWAY_ROUTE_CACHE_SECONDS": "0.3",
    "HANGAR_GATEWAY_ROUTE_STALE_SECONDS": "0.3",
}


@dataclass
class Load:
    url: str
    token: str
    streams: int
    done: list[tuple[float, str | None, str]] = field(default_factory=list)  # (ended, finish_reason, error)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Load:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(300)

    async def _run(self) -> None:
        import openai

        client = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.token, max_retries=0, timeout=240)
        try:
            await asyncio.gather(*(self._one(client) for _ in range(self.streams)))
        finally:
            await client.close()

    async def _one(self, client: Any) -> None:
        import openai

        while not self.stopping.is_set():
            finish, error = None, ""
            try:
                stream = await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "the harbor"}], max_tokens=24, stream=True
                )
                async for chunk in stream:
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
            except openai.OpenAIError as exc:
                error = type(exc).__name__
            self.done.append((time.time(), finish, error))

    def dropped(self) -> int:
        """Failed, or ended without a finish_reason (a truncated answer taken for a whole one)."""
        return sum(1 for _, finish, error in self.done if error or finish is None)


def start_gateway(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx
    from django.db import connection

    from tests.support.ports import free_port

    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.controlplane.gateway.settings",
        "HANGAR_GATEWAY_TEST_DB": str(connection.settings_dict["NAME"]),
        "HANGAR_GATEWAY_COLD_START_TIMEOUT": "300",
    }
    argv = [str(REPO / ".venv/bin/python"), "-m", "uvicorn", "console.asgi:application", "--port", str(port),
            "--host", "127.0.0.1", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip
    with (work / "gateway.log").open("ab") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/v1/models", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=60)
    return proc, url


def events(deployment_id: int, reason: str, after: float) -> list[tuple[float, str]]:
    from controlplane.deployments.models import DeploymentEvent

    rows = DeploymentEvent.objects.filter(deployment_id=deployment_id, reason=reason).order_by("id")
    return [(e.created_at.timestamp(), e.message) for e in rows if e.created_at.timestamp() >= after]


def ramp(deployment: Any, url: str, token: str, streams: int) -> dict[str, Any]:
    from controlplane.deployments.models import Deployment

    light = Load(url, token, 1).start()
    wait_for(lambda: len(light.done) >= 3, timeout=300)
    step = time.time()
    heavy = Load(url, token, streams - 1).start()
    up = wait_for(lambda: events(deployment.pk, "Scaled", step), timeout=120)
    ready = wait_for(lambda: events(deployment.pk, "ReplicaReady", step), timeout=600)
    time.sleep(5)  # pacing: load on the grown deployment
    stop = time.time()
    heavy.stop()
    light.stop()
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).replicas == 1, timeout=300)
    down = [e for e in events(deployment.pk, "Scaled", stop) if "→ 1" in e[1]]
    return {
        "step_to_scale_decision_s": round(up[0][0] - step, 2),
        "step_to_new_replica_ready_s": round(ready[0][0] - step, 2),
        "scale_decision": up[0][1],
        "load_stop_to_scale_down_s": round(down[0][0] - stop, 2) if down else None,
        "requests": len(light.done) + len(heavy.done),
        "requests_dropped": light.dropped() + heavy.dropped(),
    }


def cold_start(deployment: Any, url: str, token: str) -> dict[str, Any]:
    import openai

    from controlplane.deployments.models import Deployment
    from workers.drivers import local_driver

    wait_for(
        lambda: Deployment.objects.get(pk=deployment.pk).replicas == 0 and not local_driver().list(deployment.pk),
        timeout=300,
    )
    client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=300)
    started = time.monotonic()
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    return {"cold_start_s": round(time.monotonic() - started, 2), "served": bool(answer.choices[0].finish_reason)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hangar-bench-autoscale-"))
    # The worker's replicas, as this process's local driver sees them; the model in a shared folder.
    os.environ.update(WORKER_ENV, HANGAR_DATA_DIR=str(work / "data"), HANGAR_MODEL_ROOTS=str(work))
    setup_django()
    use_bench_broker()
    from controlplane.core.context import SYSTEM
    from controlplane.deployments import services
    from tests.factories import ApiKeyFactory, ModelFactory, TargetFactory, TenantFactory
    from workers.runtime.tinymodel import build_tiny_model

    model_dir = build_tiny_model(work / "_shared" / "tiny-llama")
    for path in [work, model_dir, *model_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    worker = start_worker(work / "data", work / "worker.log", 1.0)
    gateway, url = start_gateway(work)
    results: dict[str, Any] = {"streams": args.streams}
    try:
        tenant = TenantFactory(slug=f"bench-autoscale-{time.monotonic_ns()}")
        model = ModelFactory(tenant=tenant, source=str(model_dir))
        target = TargetFactory(tenant=tenant, kind="local")
        data = {
            "name": "tiny", "served_model_name": "tiny", "replicas": 1, "min_replicas": 1, "max_replicas": 3,
            "autoscale": True, "target_concurrency": 8, "autoscale_panic_seconds": 3,
            "autoscale_stable_seconds": 10, "autoscale_scale_down_delay_seconds": 20,
        }  # fmt: skip
        deployment = services.deployment_create(actor=SYSTEM, tenant=tenant, model=model, target=target, data=data)
        token = ApiKeyFactory(tenant=tenant, name="bench", rpm_limit=100_000, tpm_limit=100_000_000).secret
        from controlplane.deployments.models import Deployment

        wait_for(lambda: Deployment.objects.get(pk=deployment.pk).ready_replicas == 1, timeout=300)
        results["ramp"] = ramp(deployment, url, token, args.streams)
        print(json.dumps(results["ramp"]), flush=True)
        services.deployment_update(
            actor=SYSTEM, deployment=deployment, data={"min_replicas": 0, "scale_to_zero_idle_seconds": 3}
        )
        results["from_zero"] = cold_start(deployment, url, token)
        print(json.dumps(results["from_zero"]), flush=True)
        services.deployment_delete(actor=SYSTEM, deployment=deployment)
    finally:
        os.killpg(gateway.pid, 9)
        os.killpg(worker.pid, 9)
        worker.wait()
        gateway.wait()
        from workers.drivers import local_driver

        for replica in local_driver().list(None):
            local_driver().remove(replica.backend_id)
    print(json.dumps(results, indent=2))
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
