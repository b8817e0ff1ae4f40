"""deploy/observability: every metric the Grafana dashboard and the alert rules use is exposed by
a real web process (``/metrics``) or a real worker (its metrics endpoint) after some activity,
and the alert file is a valid set of Prometheus rule groups.

Activity: a chat completion through the gateway to a stub replica and one to a dead replica
(5xx, upstream errors), a websocket client that receives a message, a deployment reconciled by
the worker, and a task that raises.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from controlplane.core.context import SYSTEM
from controlplane.core.realtime import send_now, tenant_group
from controlplane.core.tasks import RECONCILE_DEPLOYMENT
from controlplane.deployments import services
from controlplane.deployments.choices import Phase, ReplicaState
from controlplane.deployments.models import Deployment
from controlplane.tenancy.choices import Role
from tests.conftest import REPO_ROOT
from tests.controlplane.gateway.conftest import Server, scrape_headers, start_stub
from tests.factories import ApiKeyFactory, DeploymentFactory, ModelFactory, ReplicaFactory, TargetFactory, TenantFactory
from tests.support.ports import free_port
from tests.support.waiting import wait_for
from tests.workers import processes
from tests.workers.conftest import start_worker, test_broker  # noqa: F401  (fixtures)

OBSERVABILITY = REPO_ROOT / "deploy" / "observability"
FAKE = "tests.workers.fake_runtime"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# PromQL words that are not metric names.
FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev", "group",
    "rate", "irate", "increase", "deriv", "delta", "idelta", "histogram_quantile", "vector", "scalar",
    "abs", "clamp_min", "clamp_max", "absent", "absent_over_time", "max_over_time", "min_over_time",
    "avg_over_time", "sum_over_time", "predict_linear", "label_replace", "time",
}  # fmt: skip
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords, labels or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries ([5m], [15m:1m], [$__rate_interval])
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in IDENTIFIER.finditer(text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("("):
            assert word in FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        elif word not in KEYWORDS:
            names.add(word)
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for group in yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())["groups"]
        for rule in group["rules"]
    ]


def sample_names(exposition: str) -> dict[str, str]:
    """Every sample name exposed (``x_bucket``, ``x_sum``, ``x_total``, ``x``...) -> its family's type.

    Matching PromQL names against *sample* names leaves suffix handling to Prometheus's own
    parser: ``_bucket`` exists only for histograms, ``_total`` only for counters, and a gauge
    that happens to end in ``_count`` stays itself.
    """
    names: dict[str, str] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            names[sample.name] = family.type
    return names


# --------------------------------------------------------------------------- static checks


def test_promql_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, kind) (rate(hangar_a_bucket{kind=~"x|y", q="hangar_not_me"}[5m])))'
        " / on (kind) group_left sum(rate(hangar_b_count[$__rate_interval])) > 0"
        " and deriv(max(hangar_c)[15m:1m]) > 0 or vector(0)"
    )
    assert metric_names(expr) == {"hangar_a_bucket", "hangar_b_count", "hangar_c"}


def test_alert_rules_are_valid_rule_groups() -> None:
    document = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names)) >= 2
    alerts = set()
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert isinstance(rule["alert"], str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert rule["alert"] not in alerts
            alerts.add(rule["alert"])
            assert isinstance(rule["expr"], str) and metric_names(rule["expr"])
            assert re.fullmatch(r"\d+[smhd]", rule.get("for", "0s"))
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            assert all(isinstance(v, str) for v in [*rule["labels"].values(), *rule["annotations"].values()])
    # The alerts this file promises.
    for name in ("HangarGatewayHigh5xxRatio", "HangarReconcileFailures", "HangarQueueDepthGrowing",
                 "HangarDeploymentNoReadyReplicas", "HangarTaskFailures"):  # fmt: skip
        assert name in alerts


def test_the_scrape_example_loads_the_alert_rules() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yaml").read_text())
    assert config["rule_files"] == ["alerts.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"hangar-web", "hangar-worker"} <= set(jobs)
    # The web processes' /metrics answers only to the scrape token (HANGAR_METRICS_TOKEN).
    assert jobs["hangar-web"]["authorization"]["type"] == "Bearer"
    assert jobs["hangar-web"]["authorization"]["credentials_file"]


# --------------------------------------------------------------------------- real processes


@pytest.fixture
def web(transactional_db: Any, test_broker: str, tmp_path: Path) -> Iterator[tuple[Server, Path]]:  # noqa: F811
    """The web process (uvicorn on console.asgi) on the test database, writing JSON logs."""
    port = free_port()
    log = tmp_path / "web.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "DATABASE_URL": processes.test_database_url(),
        "CELERY_BROKER_URL": processes.test_broker_url(),
        "HANGAR_LOG_FORMAT": "json",
        "HANGAR_LOG_LEVEL": "INFO",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    argv = [sys.executable, "-m", "uvicorn", "console.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    server = Server("web", argv, port, env=env, log_path=log).serve("/metrics", 60)
    try:
        yield server, log
    finally:
        server.stop()


@pytest.fixture
def stub() -> Iterator[Server]:
    server = start_stub(tokens=4)
    yield server
    server.stop()


def scrape(url: str) -> dict[str, str]:
    response = httpx.get(url, headers=scrape_headers(), timeout=10)
    assert response.status_code == 200, response.text
    return sample_names(response.text)


def sample_value(url: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(url, headers=scrape_headers(), timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def websocket_round_trip(url: str, cookie: str, origin: str, tenant_id: int, metrics_url: str) -> None:
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": origin}) as socket:
        await asyncio.to_thread(
            wait_for,
            lambda: sample_value(metrics_url, "hangar_websocket_clients") == 1.0,
            30,
            message="the websocket client counted",
        )
        await asyncio.to_thread(send_now, tenant_group(tenant_id), {"kind": "event", "message": "hello"})
        async with asyncio.timeout(20):
            while json.loads(await socket.recv()).get("message") != "hello":  # other pushes may come first
                pass


def test_every_metric_of_the_dashboard_and_alerts_is_exposed(
    web: tuple[Server, Path],
    stub: Server,
    start_worker: Any,  # noqa: F811
    make_member: Any,
    model_root: Path,
    tmp_path: Path,
) -> None:
    server, web_log = web
    metrics_dir = tmp_path / "worker-metrics"
    metrics_dir.mkdir()
    web_metrics = f"{server.url}/metrics"

    # Gateway: one answer from a replica, one from a replica that is gone (503, connect error).
    tenant = TenantFactory()
    user = make_member(Role.OPERATOR, tenant)
    token = ApiKeyFactory(tenant=tenant, name="obs").secret
    endpoints = {"served": stub.url, "gone": f"http://127.0.0.1:{free_port()}"}
    for name, endpoint in endpoints.items():
        deployment = DeploymentFactory(tenant=tenant, served_model_name=name, phase=Phase.RUNNING)
        ReplicaFactory(deployment=deployment, endpoint=endpoint, state=ReplicaState.READY)
    for name in endpoints:
        answer = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == (200 if name == "served" else 503), answer.text

    # Websockets: a signed-in member's socket, and a message pushed to its tenant.
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    ws_url = f"ws://127.0.0.1:{server.port}/ws/tenant/"
    asyncio.run(websocket_round_trip(ws_url, cookie, server.url, tenant.pk, web_metrics))

    # Worker: a deployment it reconciles on the local driver, and a task that raises. It starts only
    # now: its beat re-reconciles every deployment at start, and the gateway's two rows above have
    # no backend, so an earlier start could mark them Failed before they were asked.
    worker_port = free_port()
    worker = start_worker(
        HANGAR_LOG_FORMAT="json",
        HANGAR_LOCAL_RUNTIME_MODULE=FAKE,
        HANGAR_WORKER_METRICS_PORT=str(worker_port),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
    source = model_root / "_shared" / f"obs-model-{tmp_path.name}"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    local = services.deployment_create(
        actor=SYSTEM,
        tenant=tenant,
        model=ModelFactory(tenant=tenant, source=str(source)),
        target=TargetFactory(tenant=tenant, kind="local"),
        data={"name": "obs", "replicas": 1, "max_replicas": 1},
    )
    from console.celery import app

    app.send_task(RECONCILE_DEPLOYMENT, args=["not-a-deployment-id"])
    wait_for(
        lambda: sample_value(worker_metrics, "hangar_reconcile_passes_total", kind="local", outcome="converged"),
        60,
        message="a converged reconcile pass counted",
    )
    wait_for(
        lambda: sample_value(worker_metrics, "hangar_celery_task_failures_total", task=RECONCILE_DEPLOYMENT),
        60,
        message="the failed task counted",
    )

    exposed = {**scrape(web_metrics), **scrape(worker_metrics)}
    used = {name for expr in [*dashboard_exprs(), *(r["expr"] for r in alert_rules())] for name in metric_names(expr)}
    assert used, "no metric names found"
    assert all(name.startswith("hangar_") for name in used), sorted(used)
    missing = sorted(used - exposed.keys())
    assert not missing, f"used by the dashboard or alerts but not exposed: {missing}"

    # The state the web reads on each scrape is the real state.
    assert sample_value(web_metrics, "hangar_celery_queue_depth", queue="celery") is not None
    assert sample_value(web_metrics, "hangar_state_collector_up", source="database") == 1.0
    assert sample_value(web_metrics, "hangar_deployment_desired_replicas", deployment_id=str(local.pk)) == 1.0
    assert (
        tenant.slug not in httpx.get(web_metrics, headers=scrape_headers()).text
    )  # ids only: /metrics names no tenant
    assert sample_value(web_metrics, "hangar_gateway_tokens_total", model="served", kind="completion") == 4.0
    assert (sample_value(web_metrics, "hangar_websocket_messages_total") or 0) >= 1

    # Both processes logged JSON lines only, without the key.
    for log in (web_log.read_text(), worker.log()):
        for line in filter(str.strip, log.splitlines()):
            assert isinstance(json.loads(line), dict), line
        assert token not in log

    services.deployment_delete(actor=SYSTEM, deployment=local)
    wait_for(lambda: not Deployment.objects.filter(pk=local.pk).exists(), 60, message="deleted")


def test_a_worker_told_to_serve_metrics_without_a_directory_does_not_start(
    test_broker: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    env = processes.worker_env(HANGAR_WORKER_METRICS_PORT=str(free_port()), HANGAR_LOG_FORMAT="json")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [
            str(processes.CELERY),
            "-A",
            "console",
            "--quiet",
            "worker",
            "--pool",
            "solo",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "needs PROMETHEUS_MULTIPROC_DIR" in done.stdout + done.stderr
