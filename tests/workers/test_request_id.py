"""The request id of a REST write reaches the log lines of the task it enqueued, in a real worker
that writes JSON logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from controlplane.core.context import SYSTEM
from controlplane.core.tasks import RECONCILE_DEPLOYMENT
from controlplane.deployments import services
from controlplane.deployments.models import Deployment
from controlplane.tenancy.choices import Role
from tests.factories import AccessTokenFactory, ModelFactory, TargetFactory, TenantFactory
from tests.support.waiting import wait_for
from tests.workers.processes import Worker

FAKE = "tests.workers.fake_runtime"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def log_records(worker: Worker) -> list[dict[str, Any]]:
    """Every line the worker wrote, parsed: each one must be a JSON object."""
    records = []
    for line in worker.log().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"a worker log line is not JSON: {line[:300]!r}") from None
        assert isinstance(record, dict), line
        records.append(record)
    return records


def task_records(worker: Worker, rid: str) -> list[dict[str, Any]]:
    return [r for r in log_records(worker) if r.get("request_id") == rid and r.get("task") == RECONCILE_DEPLOYMENT]


def test_a_rest_write_and_the_task_it_enqueued_log_the_same_request_id(
    start_worker: Any, make_member: Any, model_root: Path, tmp_path: Path
) -> None:
    worker = start_worker(HANGAR_LOG_FORMAT="json", HANGAR_LOCAL_RUNTIME_MODULE=FAKE)
    source = model_root / "_shared" / f"rid-model-{tmp_path.name}"
    source.mkdir(parents=True)
    (source / "config.json").write_text("{}")
    tenant = TenantFactory()
    model = ModelFactory(tenant=tenant, source=str(source))
    target = TargetFactory(tenant=tenant, kind="local")
    deployment = services.deployment_create(
        actor=SYSTEM, tenant=tenant, model=model, target=target, data={"name": "rid", "replicas": 1, "max_replicas": 2}
    )
    token = AccessTokenFactory(user=make_member(Role.OPERATOR, tenant)).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    scaled = client.post(
        f"/api/v1/deployments/{deployment.pk}/scale/",
        {"replicas": 2},
        format="json",
        HTTP_X_REQUEST_ID="scale-7f3a.b_c",
    )
    assert scaled.status_code == 202, scaled.content
    assert scaled["X-Request-ID"] == "scale-7f3a.b_c"
    records = wait_for(lambda: task_records(worker, "scale-7f3a.b_c"), timeout=60, message="the task's log lines")
    assert all(r["task_id"] and r["level"] and r["timestamp"] and r["logger"] for r in records)

    # Without a usable id of its own (this one is too long), the client gets a new one, and so does the task.
    deleted = client.delete(f"/api/v1/deployments/{deployment.pk}/", HTTP_X_REQUEST_ID="x" * 65)
    assert deleted.status_code in (202, 204), deleted.content
    generated = deleted["X-Request-ID"]
    assert generated != "x" * 65 and len(generated) == 32
    wait_for(lambda: task_records(worker, generated), timeout=60, message="the delete's task log lines")
    wait_for(lambda: not Deployment.objects.filter(pk=deployment.pk).exists(), timeout=60, message="deleted")
    assert token not in worker.log()
    log_records(worker)  # still nothing but JSON lines
