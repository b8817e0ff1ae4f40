"""Gateway overhead: the same requests sent straight to an upstream and through the gateway.

    eval "$(bash deploy/dev/services.sh env)"
    .venv/bin/python bench/gateway_overhead.py [--duration 10] [--litellm /path/to/litellm]

Upstreams: ``bench/stub_upstream.py`` with a fixed latency, and the real runtime serving the
tiny model. The gateway runs under uvicorn (uvloop, httptools) with 1 and 2 workers, with
key verification, RPM/TPM limits (set high enough never to refuse), budgets and metering on.
Load comes from ``wrk`` (C, one thread, closed loop; far cheaper than a Python client on a
2-core machine). The bench uses a database of its own (``<db>_gateway_bench``) migrated on first use.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
STUB_LATENCY_MS = 5.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


METRICS_TOKEN = "bench-scrape-token-" + os.urandom(16).hex()  # /metrics answers only to it


def wait_http(url: str, timeout: float, ok: set[int] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=1).status_code
            if (ok and status in ok) or (not ok and status < 500):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


# ----------------------------------------------------------------------------- database


def bench_database() -> str:
    """Create and migrate ``<name>_bench``; returns its URL."""
    import psycopg

    url = os.environ["DATABASE_URL"]
    base, name = url.rsplit("/", 1)
    bench_name = f"{name.split('?')[0]}_gateway_bench"
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (bench_name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{bench_name}"')
    bench_url = f"{base}/{bench_name}"
    env = {**os.environ, "DATABASE_URL": bench_url, "DJANGO_SETTINGS_MODULE": "console.settings.test"}
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    return bench_url


def seed(bench_url: str, stub_url: str, runtime_url: str) -> tuple[str, str]:
    """A tenant with a high-limit key (RPM, TPM, budget: every limiter path runs but never
    refuses) and two deployments (stub, tiny); and a tenant whose key has no limits at all
    (no Redis call). Returns both tokens."""
    code = f"""
import django, json
django.setup()
from controlplane.core.context import SYSTEM
from controlplane.deployments.models import Deployment, Replica
from controlplane.keys.services import api_key_create
from tests.factories import DeploymentFactory, ReplicaFactory, TenantFactory
import uuid
tenant = TenantFactory(slug="bench-" + uuid.uuid4().hex[:8], rpm_limit=10_000_000, tpm_limit=1_000_000_000,
                       monthly_token_budget=10**12)
for name, endpoint in (("stub", {stub_url!r}), ("tiny", {runtime_url!r})):
    d = DeploymentFactory(tenant=tenant, served_model_name=name, phase="Running", max_tokens_cap=1024)
    ReplicaFactory(deployment=d, endpoint=endpoint, state="ready")
key, token = api_key_create(actor=SYSTEM, tenant=tenant, data={{"name": "bench", "rpm_limit": 10_000_000,
    "tpm_limit": 1_000_000_000, "monthly_token_budget": 10**12}})
tenant2 = TenantFactory(slug="bench-nolimit-" + uuid.uuid4().hex[:8])
d = DeploymentFactory(tenant=tenant2, served_model_name="stub", phase="Running", max_tokens_cap=1024)
ReplicaFactory(deployment=d, endpoint={stub_url!r}, state="ready")
_, unlimited = api_key_create(actor=SYSTEM, tenant=tenant2, data={{"name": "bench-unlimited"}})
print(json.dumps({{"token": token, "unlimited": unlimited}}))
"""
    env = {**os.environ, "DATABASE_URL": bench_url, "DJANGO_SETTINGS_MODULE": "console.settings.test"}
    out = subprocess.run([PY, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    tokens = json.loads(out.strip().splitlines()[-1])
    return str(tokens["token"]), str(tokens["unlimited"])


# ----------------------------------------------------------------------------- servers


def start_stub() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, str(ROOT / "bench" / "stub_upstream.py"), "--port", str(port), "--latency-ms", str(STUB_LATENCY_MS)]
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", 15)
    return proc, url


def start_runtime(model_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "workers.runtime", "--model", str(model_dir), "--port", str(port), "--served-model-name", "tiny"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", 180, ok={200})
    return proc, url


def start_gateway(bench_url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": bench_url,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "HANGAR_LOG_LEVEL": "WARNING",
        "HANGAR_METRICS_TOKEN": METRICS_TOKEN,
    }
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "uvicorn",
            "console.asgi:application",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/metrics", 30)
    return proc, url


def start_litellm(litellm: str, stub_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    config = Path(tempfile.mkdtemp()) / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: stub\n"
        "    litellm_params:\n"
        "      model: openai/stub\n"
        f"      api_base: {stub_url}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        "  master_key: sk-bench-1234\n"
    )
    # Without DATABASE_URL/REDIS_URL: LiteLLM would try to run its own migrations on ours.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    proc = subprocess.Popen(
        [litellm, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", 120)
    return proc, url, config


# ----------------------------------------------------------------------------- load


def wrk(url: str, body: dict[str, Any], token: str | None, connections: int, duration: float) -> dict[str, float]:
    """Closed-loop load with wrk; returns rps, p50/p99 (ms) and the non-2xx count."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lua = Path(tempfile.mkdtemp()) / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += [
        "done = function(summary, latency, requests)",
        '  io.write(string.format("P50 %f\\nP99 %f\\n", latency:percentile(50), latency:percentile(99)))',
        "end",
    ]
    lua.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", "-s", str(lua), "--timeout", "10s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50": float(re.search(r"P50 ([\d.]+)", out).group(1)) / 1000,  # type: ignore[union-attr]
        "p99": float(re.search(r"P99 ([\d.]+)", out).group(1)) / 1000,  # type: ignore[union-attr]
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


CLIENT_PROBE = """
import asyncio, json, sys, time
import uvloop
url, which, n, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
body = json.dumps({"model": "stub", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}).encode()
headers = {"Content-Type": "application/json"}

async def main():
    left = [n]
    if which == "aiohttp":
        import aiohttp
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async def one():
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
    else:
        import httpx
        session = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=c))
        async def one():
            r = await session.post(url, content=body, headers=headers)
            r.read()
    async def worker():
        while left[0] > 0:
            left[0] -= 1
            await one()
    await asyncio.gather(*(worker() for _ in range(c)))  # warm the pool
    left[0] = n
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(c)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"rps": n / wall, "cpu_us": cpu / n * 1e6}))
    if which == "aiohttp":
        await session.close()
    else:
        await session.aclose()

uvloop.run(main())
"""


PAIRED_PROBE = """
import asyncio, json, sys, time
import aiohttp, uvloop
direct, gateway, token, body, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])

async def main():
    async with aiohttp.ClientSession() as session:
        plain = {"Content-Type": "application/json"}
        authed = {**plain, "Authorization": "Bearer " + token}
        times = {"direct": [], "gateway": []}
        async def one(which):
            url, headers = (direct, plain) if which == "direct" else (gateway, authed)
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                assert r.status == 200, (which, r.status)
            times[which].append(time.perf_counter() - t0)
        for i in range(20):
            await one("direct"); await one("gateway")
        times = {"direct": [], "gateway": []}
        for i in range(n):
            order = ("direct", "gateway") if i % 2 else ("gateway", "direct")
            for which in order:
                await one(which)
    def q(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000
    print(json.dumps({w: {"p50": q(t, 0.5), "p99": q(t, 0.99)} for w, t in times.items()}))

uvloop.run(main())
"""


def paired_latency(direct_url: str, gateway_url: str, token: str, body: dict[str, Any], n: int) -> dict[str, float]:
    """Added latency from interleaved sequential requests (direct, gateway, direct, ...), so
    both paths see the same machine load: p50/p99 of each path in ms."""
    out = subprocess.run(
        [PY, "-c", PAIRED_PROBE, direct_url, gateway_url, token, json.dumps(body), str(n)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {
        "direct_p50": result["direct"]["p50"],
        "direct_p99": result["direct"]["p99"],
        "gateway_p50": result["gateway"]["p50"],
        "gateway_p99": result["gateway"]["p99"],
    }


def histogram_quantiles(metrics_url: str, name: str) -> dict[str, float]:
    """p50/p99 (ms) of a Prometheus histogram scraped from one gateway process."""
    buckets: list[tuple[float, float]] = []
    for line in httpx.get(metrics_url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0
    result = {}
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        target, lower, below = q * total, 0.0, 0.0
        for bound, count in buckets:
            if count >= target and count > below:
                upper = bound if bound != float("inf") else lower
                result[label] = (lower + (upper - lower) * (target - below) / (count - below)) * 1000
                break
            lower, below = bound, count
    result["count"] = total
    return result


def client_choice(stub_url: str, n: int = 5000, concurrency: int = 16) -> dict[str, dict[str, float]]:
    """The proxy's HTTP client: aiohttp vs httpx, same requests to the stub, CPU per request."""
    results = {}
    for which in ("aiohttp", "httpx"):
        out = subprocess.run(
            [PY, "-c", CLIENT_PROBE, stub_url + "/v1/chat/completions", which, str(n), str(concurrency)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results[which] = json.loads(out.strip().splitlines()[-1])
    return results


Row = tuple[str, str, int, dict[str, float]]  # upstream, path, connections, wrk figures
PATH = "/v1/chat/completions"
CHAT_STUB = {"model": "stub", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
CHAT_TINY = {"model": "tiny", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 2}
LITELLM_KEY = "sk-bench-1234"


@dataclass(frozen=True)
class Setup:
    """The upstreams and keys every measurement uses, and how long and wide to load them."""

    bench_url: str
    stub_url: str
    runtime_url: str  # unused with --skip-runtime
    token: str
    unlimited: str  # a key without limits: no Redis call on its requests
    duration: float
    latency_conns: list[int]
    throughput_conns: list[int]
    skip_runtime: bool


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    paired: dict[str, dict[str, float]] = field(default_factory=dict)
    internal: dict[str, float] = field(default_factory=dict)
    clients: dict[str, dict[str, float]] = field(default_factory=dict)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--latency-connections", default="1,8")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run every bench process at this niceness (e.g. -5 on a machine shared with other jobs; needs root)",
    )
    parser.add_argument("--throughput-connections", default="32,64,128")
    parser.add_argument("--litellm", default=shutil.which("litellm") or "")
    parser.add_argument("--skip-runtime", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    if args.nice:
        os.nice(args.nice)  # inherited by the stub, runtime, gateway, LiteLLM and wrk
    procs: list[subprocess.Popen[bytes]] = []
    try:
        setup = start_upstreams(args, procs)
        results = Results(clients=client_choice(setup.stub_url))
        measure_direct(setup, results)
        for workers in (1, 2):
            measure_gateway(setup, results, workers)
        for c in setup.throughput_conns:
            results.rows.append(
                ("stub (5 ms)", "direct", c, wrk(setup.stub_url + PATH, CHAT_STUB, None, c, setup.duration))
            )
        if args.litellm:
            measure_litellm(setup, results, args.litellm, procs)
    finally:
        for proc in procs:
            stop(proc)
    print_results(results, args)


def start_upstreams(args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]) -> Setup:
    bench_url = bench_database()
    stub, stub_url = start_stub()
    procs.append(stub)
    runtime_url = "http://127.0.0.1:1"
    if not args.skip_runtime:
        sys.path.insert(0, str(ROOT))
        from workers.runtime.tinymodel import build_tiny_model

        model_dir = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny-llama")
        runtime, runtime_url = start_runtime(model_dir)
        procs.append(runtime)
    token, unlimited = seed(bench_url, stub_url, runtime_url)
    return Setup(
        bench_url=bench_url,
        stub_url=stub_url,
        runtime_url=runtime_url,
        token=token,
        unlimited=unlimited,
        duration=args.duration,
        latency_conns=[int(x) for x in args.latency_connections.split(",")],
        throughput_conns=[int(x) for x in args.throughput_connections.split(",")],
        skip_runtime=args.skip_runtime,
    )


def measure_direct(setup: Setup, results: Results) -> None:
    """The upstreams on their own, at the latency connection counts."""
    for lc in setup.latency_conns:
        results.rows.append(
            ("stub (5 ms)", "direct", lc, wrk(setup.stub_url + PATH, CHAT_STUB, None, lc, setup.duration))
        )
    if not setup.skip_runtime:
        results.rows.append(
            ("tiny runtime", "direct", 1, wrk(setup.runtime_url + PATH, CHAT_TINY, None, 1, setup.duration))
        )


def measure_gateway(setup: Setup, results: Results, workers: int) -> None:
    """The gateway with ``workers`` uvicorn workers in front of the upstreams (paired latency with 1)."""
    gw, gw_url = start_gateway(setup.bench_url, workers)
    try:
        wrk(gw_url + PATH, CHAT_STUB, setup.token, 8, 2)  # warm caches and pools in every worker
        if workers == 1:
            measure_paired(setup, results, gw_url)
        how, d = f"gateway {workers}w", setup.duration
        for lc in setup.latency_conns:
            results.rows.append(("stub (5 ms)", how, lc, wrk(gw_url + PATH, CHAT_STUB, setup.token, lc, d)))
        if not setup.skip_runtime:
            results.rows.append(("tiny runtime", how, 1, wrk(gw_url + PATH, CHAT_TINY, setup.token, 1, d)))
        for c in setup.throughput_conns:
            results.rows.append(("stub (5 ms)", how, c, wrk(gw_url + PATH, CHAT_STUB, setup.token, c, d)))
    finally:
        stop(gw)


def measure_paired(setup: Setup, results: Results, gw_url: str) -> None:
    stub, gateway = setup.stub_url + PATH, gw_url + PATH
    results.paired["stub (5 ms)"] = paired_latency(stub, gateway, setup.token, CHAT_STUB, 2000)
    results.paired["stub (5 ms), key without limits (no Redis call)"] = paired_latency(
        stub, gateway, setup.unlimited, CHAT_STUB, 2000
    )
    if not setup.skip_runtime:
        results.paired["tiny runtime"] = paired_latency(setup.runtime_url + PATH, gateway, setup.token, CHAT_TINY, 200)
    results.internal = histogram_quantiles(gw_url + "/metrics", "hangar_gateway_added_latency_seconds")


def measure_litellm(setup: Setup, results: Results, litellm: str, procs: list[subprocess.Popen[bytes]]) -> None:
    ll, ll_url, _ = start_litellm(litellm, setup.stub_url)
    procs.append(ll)
    wrk(ll_url + PATH, CHAT_STUB, LITELLM_KEY, 8, 2)
    for c in (*setup.latency_conns, *setup.throughput_conns):
        results.rows.append(
            ("stub (5 ms)", "litellm 1w", c, wrk(ll_url + PATH, CHAT_STUB, LITELLM_KEY, c, setup.duration))
        )


def print_results(results: Results, args: argparse.Namespace) -> None:
    print_paired(results)
    print()
    print("HTTP client for the proxy (5000 requests to the stub, 16 concurrent, uvloop):")
    print()
    print("| client | req/s | CPU µs per request |")
    print("|---|---:|---:|")
    for which, r in results.clients.items():
        print(f"| {which} | {r['rps']:.0f} | {r['cpu_us']:.0f} |")
    print()
    load1, load5, _ = os.getloadavg()
    print(
        f"load: wrk 1 thread, closed loop, {args.duration:.0f} s per row; {os.cpu_count()} cores shared by all "
        f"processes; niceness {args.nice}; load average at the end {load1:.1f} (1 min) {load5:.1f} (5 min)"
    )
    print_rows(results.rows)


def print_paired(results: Results) -> None:
    print()
    print("Added latency, interleaved sequential requests (direct, gateway, direct, ...; 1 worker; ms):")
    print()
    print("| upstream | direct p50 | gateway p50 | added p50 | direct p99 | gateway p99 | added p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for upstream, r in results.paired.items():
        print(
            f"| {upstream} | {r['direct_p50']:.2f} | {r['gateway_p50']:.2f} | {r['gateway_p50'] - r['direct_p50']:.2f} "
            f"| {r['direct_p99']:.2f} | {r['gateway_p99']:.2f} | {r['gateway_p99'] - r['direct_p99']:.2f} |"
        )
    internal = results.internal
    if internal:
        print()
        print(
            f"Gateway's own histogram (hangar_gateway_added_latency_seconds, {internal['count']:.0f} requests): "
            f"p50 {internal.get('p50', 0):.2f} ms, p99 {internal.get('p99', 0):.2f} ms"
        )


def print_rows(rows: list[Row]) -> None:
    direct = {(u, c): r for u, how, c, r in rows if how == "direct"}
    print()
    print("| upstream | path | conns | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | non-2xx |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for upstream, how, conns, r in rows:
        base = direct.get((upstream, conns))
        added = ("", "")
        if base and how != "direct":
            added = (f"{(r['p50'] - base['p50']):.2f}", f"{(r['p99'] - base['p99']):.2f}")
        print(
            f"| {upstream} | {how} | {conns} | {r['rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{added[0]} | {added[1]} | {r['non2xx']:.0f} |"
        )


if __name__ == "__main__":
    main()
