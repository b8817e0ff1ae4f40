"""Websocket fan-out benchmark: N clients on one deployment, a burst of metric pushes.

    eval "$(bash deploy/dev/services.sh env)"
    DATABASE_URL=postgres://hangar:hangar@127.0.0.1:54329/hangar_bench \
        .venv/bin/python bench/ws_fanout.py --clients 1000 --messages 50 --rate 10

(any database works; it is migrated first and the bench's rows are removed at the end).

What it does:

1. creates a tenant, a viewer, a deployment and a logged-in session in the database named by
   ``DATABASE_URL`` (all removed at the end);
2. starts ``uvicorn console.asgi:application`` on a free port of 127.0.0.1 (the real ASGI stack:
   origin validator, session auth, ``DeploymentConsumer``, the Redis channel layer);
3. opens ``--clients`` websockets to ``/ws/deployments/<id>/`` from ``--client-procs`` separate
   processes, with the session cookie and the right ``Origin``;
4. from this process, sends ``--messages`` metric payloads with ``channel_layer.group_send`` to
   the deployment's group at ``--rate`` per second, each stamped with its send time;
5. every client records each message's delivery latency (receive time − send time, one clock).

Prints a markdown table per run: delivered messages, superseded ones (a socket that is behind
gets the newest metrics, not a backlog), lost ones (sockets that never got the final update),
latency p50/p95/p99/max of what arrived, and the server's CPU per delivered message (every
process of the server's session). Goal: nothing lost, p99 ≤ 100 ms.

Before/after on the same machine in one run (the machine is shared, so alternate and repeat):

    .venv/bin/python bench/ws_fanout.py --baseline <commit> --repeat 3

runs the server of ``<commit>`` (``git archive`` into a temporary directory, uvicorn with its
defaults as that commit's entrypoint had) and the current one (``--ws-per-message-deflate=false``
as ``deploy/console/entrypoint.sh``) alternately, and prints medians and current/baseline ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- clients (no Django)


def client_process(
    url: str, cookie: str, origin: str, count: int, expected: int, ready: Any, stop: Any, results: Any
) -> None:
    asyncio.run(_clients(url, cookie, origin, count, expected, ready, stop, results))


async def _clients(
    url: str, cookie: str, origin: str, count: int, expected: int, ready: Any, stop: Any, results: Any
) -> None:
    from websockets.asyncio.client import connect

    latencies: list[tuple[int, float]] = []
    received = [0] * count
    finals = [False] * count
    duplicates = 0
    seen: list[set[int]] = [set() for _ in range(count)]
    limit = asyncio.Semaphore(50)
    sockets: list[Any] = []
    started = time.monotonic()

    async def open_one() -> Any:
        async with limit:
            return await connect(
                url, additional_headers={"Cookie": cookie}, origin=origin, open_timeout=60, max_queue=None
            )

    sockets = await asyncio.gather(*(open_one() for _ in range(count)))
    ready.put({"connected": len(sockets), "seconds": time.monotonic() - started})
    cpu_start = time.process_time()

    async def listen(index: int, ws: Any) -> None:
        nonlocal duplicates
        async for raw in ws:
            now = time.time()
            message = json.loads(raw)
            if message.get("kind") != "metrics" or "bench_seq" not in message:
                continue
            seq = message["bench_seq"]
            if seq in seen[index]:
                duplicates += 1
                continue
            seen[index].add(seq)
            received[index] += 1
            latencies.append((seq, now - message["bench_sent_at"]))
            if seq == expected - 1:  # the final state: a socket that was behind may skip older ones
                finals[index] = True
                return

    listeners = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
    loop = asyncio.get_running_loop()
    waiter = loop.run_in_executor(None, stop.wait)
    done = asyncio.gather(*listeners)
    await asyncio.wait([waiter, done], return_when=asyncio.FIRST_COMPLETED)
    for task in listeners:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    results.put(
        {
            "latencies": latencies,
            "received": sum(received),
            "finals": sum(finals),
            "duplicates": duplicates,
            "cpu": time.process_time() - cpu_start,
        }
    )
    stop.set()  # release the executor thread if all messages came before the stop signal


# ----------------------------------------------------------------------------- server side (Django)


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
    os.environ.setdefault("HANGAR_DEBUG", "false")
    import django

    django.setup()


def create_fixture() -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from controlplane.catalog.models import Model
    from controlplane.deployments.models import Deployment, Target, TargetGrant
    from controlplane.tenancy.models import Membership, Tenant

    tag = f"bench-{os.getpid()}-{int(time.time())}"
    tenant = Tenant.objects.create(name=tag, slug=tag)
    user = get_user_model().objects.create_user(username=tag, password="bench-password-1")
    Membership.objects.create(user=user, tenant=tenant, role="viewer")
    model = Model.objects.create(tenant=tenant, name=tag, source="/models/none")
    target = Target.objects.create(name=tag, kind="local")
    TargetGrant.objects.create(target=target, tenant=tenant)
    deployment = Deployment.objects.create(
        tenant=tenant, name=tag, served_model_name=tag, model=model, target=target, phase="Running"
    )
    client = Client()
    client.force_login(user)
    return {
        "tenant": tenant,
        "user": user,
        "deployment": deployment,
        "cookie": f"sessionid={client.cookies['sessionid'].value}",
    }


def remove_fixture(fixture: dict[str, Any]) -> None:
    from controlplane.deployments.models import Deployment, Target

    Deployment.objects.filter(pk=fixture["deployment"].pk).delete()
    Target.objects.filter(grants__tenant=fixture["tenant"]).delete()
    fixture["tenant"].delete()
    fixture["user"].delete()


def start_server(port: int, log_path: Path, extra: list[str], cwd: Path = REPO_ROOT) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HANGAR_DB_CONN_MAX_AGE": "60", "PYTHONUNBUFFERED": "1"}
    log = log_path.open("wb")
    profile = os.environ.get("BENCH_PROFILE")  # a path: write a cProfile of the server there
    argv = [
        sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "uvicorn", "console.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log", *extra,
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not answer within {timeout} s")


async def publish(deployment_id: int, messages: int, rate: float) -> float:
    from channels.layers import get_channel_layer

    from controlplane.core.realtime import deployment_group

    layer = get_channel_layer()
    group = deployment_group(deployment_id)
    gap = 1.0 / rate
    start = time.monotonic()
    for seq in range(messages):
        target = start + seq * gap
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        payload = {
            "kind": "metrics",
            "deployment": deployment_id,
            "ts": time.time(),
            "tokens_per_second": 1234.5,
            "latency_p50": 0.21,
            "latency_p95": 0.48,
            "ttft_p50": 0.05,
            "in_flight": 12,
            "error_rate": 0.0,
            "phase": "Running",
            "ready_replicas": 2,
            "replicas": [{"id": i, "name": f"r-{i}", "state": "ready", "tokens_per_second": 617.2} for i in range(2)],
            "bench_seq": seq,
            "bench_sent_at": time.time(),
        }
        await layer.group_send(group, {"type": "push", "payload": payload})
    return time.monotonic() - start


def cpu_seconds(session: int) -> float:
    """User + system CPU time of every process in the server's session (uvicorn and any workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of /proc/<pid>/stat: session id
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def baseline_tree(ref: str) -> Path:
    """The repository at ``ref`` (``git archive``, nothing in the checkout changes), to run the old path."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="ws-fanout-baseline-"))
    archive = subprocess.run(["git", "archive", ref], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def run_once(args: argparse.Namespace, fixture: dict[str, Any], cwd: Path, server_args: list[str]) -> dict[str, Any]:
    port = free_port()
    log_path = REPO_ROOT / "var" / "bench-ws-fanout-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(port, log_path, server_args, cwd)
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/login/", 60)
        url = f"ws://127.0.0.1:{port}/ws/deployments/{fixture['deployment'].pk}/"
        origin = f"http://127.0.0.1:{port}"
        ready, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        shares = [args.clients // args.client_procs + (1 if i < args.clients % args.client_procs else 0)
                  for i in range(args.client_procs)]  # fmt: skip
        for share in shares:
            proc = ctx.Process(
                target=client_process,
                args=(url, fixture["cookie"], origin, share, args.messages, ready, stop, results),
                daemon=True,
            )
            proc.start()
            procs.append(proc)
        connect_reports = [ready.get(timeout=300) for _ in procs]
        connected = sum(r["connected"] for r in connect_reports)
        connect_s = max(r["seconds"] for r in connect_reports)
        time.sleep(1.0)  # let every consumer finish joining its groups
        cpu_before = cpu_seconds(server.pid)
        burst_s = asyncio.run(publish(fixture["deployment"].pk, args.messages, args.rate))
        deadline = time.monotonic() + args.grace
        collected = []
        for _ in procs:
            remaining = max(0.5, deadline - time.monotonic())
            try:
                collected.append(results.get(timeout=remaining))
            except Exception:
                stop.set()
                collected.append(results.get(timeout=30))
        stop.set()
        server_cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        for proc in procs:
            proc.join(timeout=10)
        os.killpg(server.pid, signal.SIGINT)  # SIGINT: a profiled server still writes its profile
        server.wait(timeout=30)
    pairs = [pair for c in collected for pair in c["latencies"]]
    delivered = sum(c["received"] for c in collected)
    return {
        "connected": connected,
        "connect_s": connect_s,
        "burst_s": burst_s,
        "load": os.getloadavg()[0],
        "server_cpu": server_cpu,
        "client_cpu": sum(c["cpu"] for c in collected),
        "pairs": pairs,
        "ms": [v * 1000 for _, v in pairs],
        "delivered": delivered,
        "finals": sum(c["finals"] for c in collected),
        "duplicates": sum(c["duplicates"] for c in collected),
    }


# What deploy/console/entrypoint.sh passes to uvicorn that matters here.
PRODUCTION_WS_ARGS = ["--ws-per-message-deflate=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=50, help="metric updates in the burst")
    parser.add_argument("--rate", type=float, default=10.0, help="updates per second during the burst")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--server-arg",
        action="append",
        help=f"extra uvicorn argument (repeatable; default: the production entrypoint's {PRODUCTION_WS_ARGS})",
    )
    parser.add_argument(
        "--baseline",
        metavar="GIT_REF",
        help="also run the server of this commit (git archive, uvicorn defaults), alternating with the current one",
    )
    parser.add_argument(
        "--baseline-server-arg", action="append", default=[], help="extra uvicorn argument for the baseline"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (alternating)")
    parser.add_argument("--per-update", action="store_true", help="also print each update's p50 and max")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait for stragglers")
    args = parser.parse_args()

    setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    variants: list[tuple[str, Path, list[str]]] = []
    if args.baseline:
        variants.append((f"baseline {args.baseline[:10]}", baseline_tree(args.baseline), args.baseline_server_arg))
    variants.append(("current", REPO_ROOT, args.server_arg if args.server_arg is not None else PRODUCTION_WS_ARGS))
    fixture = create_fixture()
    runs: list[tuple[str, int, dict[str, Any]]] = []
    try:
        for rep in range(args.repeat):
            for name, cwd, server_args in variants:
                runs.append((name, rep, run_once(args, fixture, cwd, server_args)))
                print(f"# {name} run {rep + 1}: {summary(runs[-1][2], args)}", flush=True)
    finally:
        remove_fixture(fixture)
    print_report(args, variants, runs)


def summary(r: dict[str, Any], args: argparse.Namespace) -> str:
    return (
        f"p50 {percentile(r['ms'], 0.5):.1f} ms, p99 {percentile(r['ms'], 0.99):.1f} ms, "
        f"{1e6 * r['server_cpu'] / max(1, r['delivered']):.0f} µs server CPU per delivered message, "
        f"{r['connected'] - r['finals']} sockets without the final update, load {r['load']:.1f}"
    )


def print_report(
    args: argparse.Namespace, variants: list[tuple[str, Path, list[str]]], runs: list[tuple[str, int, dict[str, Any]]]
) -> None:
    print()
    print(f"ws fan-out: {args.clients} clients, {args.messages} updates at {args.rate:g}/s, {os.cpu_count()} CPUs")
    print()
    print(
        "| variant | run | connected | delivered | superseded | lost (no final update) | duplicates "
        "| p50 ms | p95 ms | p99 ms | max ms | server CPU s | µs per delivered | load avg |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rep, r in runs:
        ms = r["ms"]
        print(
            f"| {name} | {rep + 1} | {r['connected']} | {r['delivered']} | "
            f"{r['connected'] * args.messages - r['delivered']} | {r['connected'] - r['finals']} | "
            f"{r['duplicates']} | {percentile(ms, 0.5):.1f} | {percentile(ms, 0.95):.1f} | "
            f"{percentile(ms, 0.99):.1f} | {max(ms, default=float('nan')):.1f} | {r['server_cpu']:.2f} | "
            f"{1e6 * r['server_cpu'] / max(1, r['delivered']):.0f} | {r['load']:.1f} |"
        )
    if len(variants) == 2:
        medians = {}
        for name, _, _ in variants:
            mine = [r for n, _, r in runs if n == name]
            medians[name] = {
                "p50": statistics.median(percentile(r["ms"], 0.5) for r in mine),
                "p99": statistics.median(percentile(r["ms"], 0.99) for r in mine),
                "cpu": statistics.median(r["server_cpu"] / max(1, r["delivered"]) for r in mine),
            }
        old, new = (medians[name] for name, _, _ in variants)
        print()
        print("| median over runs | p50 ms | p99 ms | µs server CPU per delivered message |")
        print("|---|---:|---:|---:|")
        for name, _, _ in variants:
            m = medians[name]
            print(f"| {name} | {m['p50']:.1f} | {m['p99']:.1f} | {1e6 * m['cpu']:.0f} |")
        print(
            f"| current / baseline | {new['p50'] / old['p50']:.2f} | {new['p99'] / old['p99']:.2f} "
            f"| {new['cpu'] / old['cpu']:.2f} |"
        )
    if args.per_update:
        for name, rep, r in runs:
            print()
            print(f"{name}, run {rep + 1}:")
            print("| update | p50 ms | max ms |")
            print("|---:|---:|---:|")
            for seq in range(args.messages):
                values = [v * 1000 for s, v in r["pairs"] if s == seq]
                print(f"| {seq} | {percentile(values, 0.5):.1f} | {max(values, default=float('nan')):.1f} |")


if __name__ == "__main__":
    main()
