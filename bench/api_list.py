"""Benchmark: REST API deployment list and detail over 1,000 deployments and 2,000 replicas.

Not a test. It creates its own PostgreSQL database (``bench_<name>``, dropped at the end, so
the dev database is never touched), seeds 10 tenants, then measures through Django's test
client (the full middleware, authentication, selector, serializer and renderer path, without
a socket):

- p50 / p99 wall-clock latency (and the web process's CPU time, which other load on the
  machine does not inflate) of ``GET /api/v1/deployments/`` (default page of 50 and the maximum page
  of 500) and ``GET /api/v1/deployments/{id}/``, as a user who is a member of all 10 tenants;
- the number of SQL queries of each request at 100 and at 1,000 deployments.

Goal: p99 ≤ 100 ms for the default page and the detail, and equal query counts at both sizes.

    eval "$(bash deploy/dev/services.sh env)"
    python bench/api_list.py [--iterations 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
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
from rest_framework.test import APIClient  # noqa: E402

TENANTS = 10
DEPLOYMENTS_PER_TENANT = 100
REPLICAS_PER_DEPLOYMENT = 2
CONDITIONS = [
    {"type": t, "status": "True", "reason": "Ok", "message": "", "last_transition_time": "2026-11-23T10:00:00Z"}
    for t in ("Ready", "Progressing", "Available", "BackendReachable")
]


def seed(per_tenant: int, start: int, tenants: list[Any]) -> None:
    """Add deployments ``start`` … ``per_tenant - 1`` (and their replicas) to every tenant."""
    from controlplane.catalog.models import Model
    from controlplane.deployments.models import Deployment, Replica, Target

    deployments = []
    for tenant in tenants:
        model = Model.objects.get(tenant=tenant)
        target = Target.objects.get(tenant=tenant)
        deployments += [
            Deployment(
                tenant=tenant,
                model=model,
                target=target,
                name=f"d-{i:04d}",
                served_model_name=f"served-{i:04d}",
                replicas=REPLICAS_PER_DEPLOYMENT,
                max_replicas=4,
                phase="Running",
                conditions=CONDITIONS,
                ready_replicas=REPLICAS_PER_DEPLOYMENT,
                observed_generation=1,
                progress={"step": "ready", "detail": "", "at": "2026-11-23T10:00:00Z"},
            )
            for i in range(start, per_tenant)
        ]
    Deployment.objects.bulk_create(deployments, batch_size=500)
    replicas = [
        Replica(
            tenant_id=d.tenant_id,
            deployment=d,
            name=f"{d.name}-{r}",
            backend_id=f"container-{d.pk}-{r}",
            generation=1,
            endpoint=f"http://127.0.0.1:{20000 + r}",
            state="ready",
        )
        for d in deployments
        for r in range(REPLICAS_PER_DEPLOYMENT)
    ]
    Replica.objects.bulk_create(replicas, batch_size=1000)


def measure(client: APIClient, url: str, params: dict[str, Any], iterations: int) -> dict[str, Any]:
    for _ in range(5):  # warm caches and connections
        client.get(url, params)
    samples, cpu = [], []
    for _ in range(iterations):
        began, began_cpu = time.perf_counter(), time.process_time()
        response = client.get(url, params)
        samples.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
        assert response.status_code == 200, response.content[:300]
    samples.sort()
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    body = response.json()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, round(0.99 * len(samples)) - 1)],
        "cpu_p50_ms": statistics.median(cpu),
        "queries": len(queries),
        "rows_returned": len(body["results"]) if "results" in body else 1,
        "bytes": len(response.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if connection.vendor != "postgresql":
        sys.exit('Run against PostgreSQL: eval "$(bash deploy/dev/services.sh env)" first.')
    setup_test_environment()
    connection.settings_dict["TEST"]["NAME"] = f"bench_{settings.DATABASES['default']['NAME']}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        results = run(args.iterations)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print_table(results, args.iterations)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def run(iterations: int) -> list[dict[str, Any]]:
    from controlplane.catalog.models import Model
    from controlplane.deployments.models import Deployment, Target
    from controlplane.tenancy.models import Membership, Tenant

    user = get_user_model().objects.create_user(username="bench", password="-")
    tenants = [Tenant.objects.create(name=f"Bench {i}", slug=f"bench-{i}") for i in range(TENANTS)]
    for tenant in tenants:
        Membership.objects.create(user=user, tenant=tenant, role="operator")
        Model.objects.create(tenant=tenant, name="tiny", source="/models/tiny", parameter_count=3_600_000)
        Target.objects.create(tenant=tenant, name="local", kind="local")
    client = APIClient()
    client.force_authenticate(user)

    results: list[dict[str, Any]] = []
    small = DEPLOYMENTS_PER_TENANT // 10
    seed(small, 0, tenants)
    for per_tenant, start in ((small, None), (DEPLOYMENTS_PER_TENANT, small)):
        if start is not None:
            seed(per_tenant, start, tenants)
        connection.cursor().execute("ANALYZE")
        total = Deployment.objects.count()
        detail_id = Deployment.objects.order_by("-id").values_list("id", flat=True).first()
        cases = [
            ("GET /api/v1/deployments/", {}, "list, default page (50)"),
            ("GET /api/v1/deployments/", {"limit": 500}, "list, max page (500)"),
            ("GET /api/v1/deployments/", {"tenant": "bench-3", "phase": "Running"}, "list, filtered"),
            (f"GET /api/v1/deployments/{detail_id}/", {}, "detail"),
            ("GET /api/v1/replicas/", {}, "replicas list (50)"),
        ]
        for label, params, what in cases:
            url = label.split(" ", 1)[1]
            figures = measure(client, url, params, iterations if "500" not in what else max(iterations // 3, 30))
            results.append({"deployments": total, "case": what, "url": label, "params": params, **figures})
    return results


def print_table(results: list[dict[str, Any]], iterations: int) -> None:
    print(f"\nREST API, Django test client, PostgreSQL, {os.cpu_count()} CPUs, {iterations} requests per case\n")
    print("| deployments | case | rows returned | p50 ms | p99 ms | web CPU p50 ms | queries | response bytes |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['deployments']} | {r['case']} | {r['rows_returned']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['cpu_p50_ms']:.1f} | {r['queries']} | {r['bytes']:,} |"
        )
    print(f"\nLoad average while measuring: {os.getloadavg()[0]:.1f} (other work on the machine inflates p99).")
    by_case: dict[str, set[int]] = {}
    for r in results:
        by_case.setdefault(r["case"], set()).add(r["queries"])
    flat = all(len(counts) == 1 for counts in by_case.values())
    print(f"\nQuery counts equal at 100 and 1,000 deployments: {'yes' if flat else 'NO'}")


if __name__ == "__main__":
    main()
