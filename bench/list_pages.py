"""Benchmark: the largest page (``limit=500``, ``Pagination.max_limit``) of every list endpoint.

Not a test: it only reports figures. It creates its own PostgreSQL database (``bench_<name>``,
dropped at the end, so the dev database is never touched), seeds 10 tenants with 1,000
deployments / 2,000 replicas and comparable rows for the other lists (5,000 events, 5,000
usage rows, 5,000 audit rows, 1,000 keys, 1,000 models, 1,000 targets granted), then times
``--iterations`` requests per endpoint through Django's test client in-process (the full
middleware, token authentication, selector, serializer and JSON renderer path, without a
socket), as an owner of all 10 tenants (and a platform admin for the platform lists).

Before/after in one run (the machine is shared, so the variants alternate request by request):
``--baseline`` also times every endpoint as it was before the list work: the lean list path
switched off (``ScopedViewSet.list_rows = None``: ``serializer.data`` of the ModelSerializer) and
the start-up heap not frozen (``gc.unfreeze()`` for that request, so full collections walk it, see
``console/heap.py``); it checks that both answer byte-identical bodies, and prints p50/p99 per
endpoint for both and ratios. The "current" variant runs as the web server does: start-up heap
frozen after seeding (``freeze_startup_heap``, called by ``console/asgi.py``).

    eval "$(bash deploy/dev/services.sh env)"
    .venv/bin/python bench/list_pages.py --baseline [--iterations 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.test")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402
from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from console.heap import freeze_startup_heap  # noqa: E402

TENANTS = 10
DEPLOYMENTS = 1000
REPLICAS_PER_DEPLOYMENT = 2
EVENTS = 5000
USAGE = 5000
AUDIT = 5000
KEYS = 1000
MODELS = 1000
TARGETS = 1000
PAGE = 500
CONDITIONS = [
    {"type": t, "status": "True", "reason": "Ok", "message": "", "last_transition_time": "2026-11-23T10:00:00Z"}
    for t in ("Ready", "Progressing", "Available", "BackendReachable")
]

# (label, url): tenant lists as a tenant owner, platform lists as a platform admin.
ENDPOINTS = [
    ("deployments", "/api/v1/deployments/"),
    ("replicas", "/api/v1/replicas/"),
    ("events", "/api/v1/events/"),
    ("targets", "/api/v1/targets/"),
    ("models", "/api/v1/models/"),
    ("keys", "/api/v1/keys/"),
    ("usage", "/api/v1/usage/"),
    ("audit", "/api/v1/audit/"),
    ("platform targets", "/api/v1/platform/targets/"),
    ("platform grants", "/api/v1/platform/grants/"),
]


def seed() -> dict[str, Any]:
    from controlplane.audit.models import AuditLog
    from controlplane.catalog.models import Model
    from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target, TargetGrant
    from controlplane.keys.models import ApiKey
    from controlplane.tenancy.models import Membership, Tenant
    from controlplane.usage.models import UsageRecord

    users = get_user_model().objects
    owner = users.create_user(username="bench-owner", password="-")
    admin = users.create_superuser(username="bench-admin", password="-", email="a@example.com")
    tenants = [Tenant.objects.create(name=f"Bench {i}", slug=f"bench-{i}") for i in range(TENANTS)]
    for tenant in tenants:
        Membership.objects.create(user=owner, tenant=tenant, role="owner")
    per = MODELS // TENANTS
    Model.objects.bulk_create(
        Model(
            tenant=t,
            name=f"model-{i:04d}",
            source=f"/models/{t.slug}/model-{i:04d}",
            architecture="LlamaForCausalLM",
            parameter_count=3_600_000,
            dtype_options=["float32", "float16"],
            tokenizer_info={"eos": "</s>"},
        )
        for t in tenants
        for i in range(per)
    )
    targets = Target.objects.bulk_create(
        Target(
            name=f"target-{i:04d}",
            kind="docker",
            docker_url="unix:///var/run/docker.sock",
            labels={"zone": "a"},
            gpu_inventory=[{"index": 0, "name": "L4", "memory_mb": 24576}],
            health={"status": "ok", "reachable": True, "gpus": 1, "reason": "checked"},
            health_checked_at=timezone.now(),
        )
        for i in range(TARGETS)
    )
    TargetGrant.objects.bulk_create(
        TargetGrant(target=target, tenant=tenants[i % TENANTS]) for i, target in enumerate(targets)
    )
    models = {m.tenant_id: m for m in Model.objects.filter(name="model-0000")}
    first_target = {tenants[i % TENANTS].pk: targets[i] for i in range(TENANTS)}
    per = DEPLOYMENTS // TENANTS
    deployments = Deployment.objects.bulk_create(
        [
            Deployment(
                tenant=t,
                model=models[t.pk],
                target=first_target[t.pk],
                name=f"d-{i:04d}",
                served_model_name=f"served-{i:04d}",
                replicas=REPLICAS_PER_DEPLOYMENT,
                max_replicas=4,
                phase="Running",
                conditions=CONDITIONS,
                ready_replicas=REPLICAS_PER_DEPLOYMENT,
                observed_generation=1,
                progress={"step": "ready", "detail": "", "at": "2026-11-23T10:00:00Z"},
                reconciled_at=timezone.now(),
            )
            for t in tenants
            for i in range(per)
        ],
        batch_size=500,
    )
    now = timezone.now()
    Replica.objects.bulk_create(
        [
            Replica(
                tenant_id=d.tenant_id,
                deployment=d,
                name=f"{d.name}-{r}",
                backend_id=f"container-{d.pk}-{r}",
                generation=1,
                endpoint=f"http://127.0.0.1:{20000 + r}",
                state="ready",
                started_at=now,
                ready_at=now,
                last_heartbeat_at=now,
            )
            for d in deployments
            for r in range(REPLICAS_PER_DEPLOYMENT)
        ],
        batch_size=1000,
    )
    DeploymentEvent.objects.bulk_create(
        [
            DeploymentEvent(
                tenant_id=d.tenant_id,
                deployment=d,
                type="Normal",
                reason="ReplicaReady",
                message=f"Replica {d.name}-0 is ready.",
                actor="system:worker",
            )
            for n in range(EVENTS // DEPLOYMENTS)
            for d in deployments
        ],
        batch_size=1000,
    )
    keys = ApiKey.objects.bulk_create(
        [
            ApiKey(
                tenant=tenants[i % TENANTS],
                name=f"key-{i:04d}",
                key_id=f"k{i:015d}",
                digest="0" * 64,
                display_prefix=f"hgr_k{i:015d}",
                scopes=["inference"],
                allowed_models=["served-0000"],
                created_by=owner,
            )
            for i in range(KEYS)
        ]
    )
    minute = now.replace(second=0, microsecond=0)
    UsageRecord.objects.bulk_create(
        [
            UsageRecord(
                tenant_id=keys[i % KEYS].tenant_id,
                api_key=keys[i % KEYS],
                model="served-0000",
                minute=minute - timedelta(minutes=i // KEYS),
                requests=3,
                prompt_tokens=120,
                completion_tokens=48,
                latency_ms_sum=812.5,
            )
            for i in range(USAGE)
        ],
        batch_size=1000,
    )
    AuditLog.objects.bulk_create(
        [
            AuditLog(
                tenant=tenants[i % TENANTS],
                actor=owner,
                actor_repr=owner.username,
                action="deployment.scale",
                object_type="deployment",
                object_id=str(deployments[i % DEPLOYMENTS].pk),
                object_repr=deployments[i % DEPLOYMENTS].name,
                changes={"replicas": [1, 2]},
                source_ip="127.0.0.1",
            )
            for i in range(AUDIT)
        ],
        batch_size=1000,
    )
    connection.cursor().execute("ANALYZE")
    return {"owner": owner, "admin": admin}


def client_for(user: Any) -> APIClient:
    """A client with a real personal access token (the API's own authentication path)."""
    from controlplane.core.context import Actor
    from controlplane.tenancy.services import access_token_create

    _, token = access_token_create(actor=Actor(user=user, via="bench"), user=user, name="bench")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(clients: dict[str, APIClient], iterations: int, baseline: bool) -> list[dict[str, Any]]:
    from controlplane.tenancy.api.base import ScopedViewSet

    lean = ScopedViewSet.__dict__["list_rows"]
    results = []
    for label, url in ENDPOINTS:
        client = clients["admin" if "/platform/" in url else "owner"]
        variants = ["current", "baseline"] if baseline else ["current"]

        def get(variant: str, client: APIClient = client, url: str = url) -> Any:
            if variant == "baseline":
                ScopedViewSet.list_rows = None  # serializer.data, as before
                gc.unfreeze()  # and full collections walk the whole start-up heap, as before
            try:
                return client.get(url, {"limit": PAGE})
            finally:
                ScopedViewSet.list_rows = lean
                gc.freeze()

        bodies = {}
        for variant in variants:
            for _ in range(3):  # warm caches and connections
                response = get(variant)
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
            bodies[variant] = response.content
            with CaptureQueriesContext(connection) as queries:
                get(variant)
            bodies[variant + " queries"] = len(queries)
        samples: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(iterations):
            for variant in variants:  # alternate: the same machine load for both
                began, began_cpu = time.perf_counter(), time.process_time()
                get(variant)
                samples[variant].append((time.perf_counter() - began) * 1000)
                cpu[variant].append((time.process_time() - began_cpu) * 1000)
        row: dict[str, Any] = {
            "endpoint": label,
            "url": url,
            "rows": len(json.loads(bodies["current"])["results"]),
            "bytes": len(bodies["current"]),
        }
        for variant in variants:
            row[variant] = {
                "p50_ms": statistics.median(samples[variant]),
                "p99_ms": percentile(samples[variant], 0.99),
                "cpu_p50_ms": statistics.median(cpu[variant]),
                "queries": bodies[variant + " queries"],
            }
        if baseline:
            row["identical"] = bodies["current"] == bodies["baseline"]
        results.append(row)
        print(f"# {label}: {row}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100, help="requests per endpoint and variant")
    parser.add_argument("--baseline", action="store_true", help="also time the ModelSerializer path, alternating")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if connection.vendor != "postgresql":
        sys.exit('Run against PostgreSQL: eval "$(bash deploy/dev/services.sh env)" first.')
    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = f"bench_lists_{settings.DATABASES['default']['NAME']}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        began = time.monotonic()
        users = seed()
        seeded = time.monotonic() - began
        clients = {"owner": client_for(users["owner"]), "admin": client_for(users["admin"])}
        frozen = freeze_startup_heap()  # what console/asgi.py does once the server has started
        print(f"# start-up heap frozen: {frozen:,} objects", flush=True)
        results = measure(clients, args.iterations, args.baseline)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print_table(results, args, seeded)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_table(results: list[dict[str, Any]], args: argparse.Namespace, seeded: float) -> None:
    print(
        f"\nLargest page (limit={PAGE}) per list endpoint; Django test client, PostgreSQL, {os.cpu_count()} CPUs, "
        f"{args.iterations} requests per endpoint and variant; seeded in {seeded:.0f} s; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    if args.baseline:
        print(
            "| endpoint | rows | bytes | baseline p50 ms | baseline p99 ms | p50 ms | p99 ms | p99 ratio "
            "| CPU p50 ms (baseline → now) | queries (baseline → now) | identical body |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in results:
            b, c = r["baseline"], r["current"]
            print(
                f"| {r['endpoint']} | {r['rows']} | {r['bytes']:,} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} "
                f"| {c['p50_ms']:.1f} | {c['p99_ms']:.1f} | {c['p99_ms'] / b['p99_ms']:.2f} "
                f"| {b['cpu_p50_ms']:.1f} → {c['cpu_p50_ms']:.1f} | {b['queries']} → {c['queries']} "
                f"| {'yes' if r['identical'] else 'NO'} |"
            )
    else:
        print("| endpoint | rows | bytes | p50 ms | p99 ms | CPU p50 ms | queries |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            c = r["current"]
            print(
                f"| {r['endpoint']} | {r['rows']} | {r['bytes']:,} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} "
                f"| {c['cpu_p50_ms']:.1f} | {c['queries']} |"
            )


if __name__ == "__main__":
    main()
