"""Progress steps are one ``ProgressStep`` (controlplane/deployments/choices.py): the reconciler
writes only its values, and the detail page lists them and hands them to its script
(``json_script``), which copies no list of its own."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.urls import reverse

from controlplane.deployments.choices import ProgressStep
from tests.conftest import REPO_ROOT
from tests.factories import DeploymentFactory
from tests.workers.fakes import FakeDriver, permanent
from workers import reconciler

pytestmark = pytest.mark.django_db
RUNTIME_STARTUP_STAGES = ["starting", "loading_model", "loaded", "warming_up", "ready", "failed"]
DASHBOARD_JS = REPO_ROOT / "frontend" / "src" / "dashboard.js"


def test_every_stage_maps_onto_a_step() -> None:
    assert set(reconciler.STEPS) == set(RUNTIME_STARTUP_STAGES)
    for stage in [*RUNTIME_STARTUP_STAGES, None, "draining", "something_new"]:
        assert isinstance(reconciler._step(stage), ProgressStep)
    # Downloading a model is the worker's step (workers/model_store.py), before any replica runs.
    assert set(reconciler.STEPS.values()) | {reconciler._step(None), ProgressStep.DOWNLOADING_MODEL} == set(
        ProgressStep
    )


def test_the_reconciler_writes_only_declared_steps() -> None:
    driver = FakeDriver()
    deployment = DeploymentFactory(replicas=1, max_replicas=1)
    seen: list[str] = []

    def run() -> None:
        reconciler.reconcile(deployment.pk, owner="t", driver_factory=lambda target, tenant_id=None: driver)
        deployment.refresh_from_db()
        if deployment.progress:
            seen.append(deployment.progress["step"])

    run()  # created, loading
    driver.make_all_ready()
    run()  # ready
    driver.fail_with = permanent()
    deployment.__class__.objects.filter(pk=deployment.pk).update(generation=deployment.generation + 1)
    run()  # failed
    assert seen == [ProgressStep.LOADING_MODEL, ProgressStep.READY, ProgressStep.FAILED]
    assert set(seen) <= set(ProgressStep.values)


def test_the_detail_page_renders_the_steps_for_its_script(login: Any, team: dict[str, Any]) -> None:
    deployment = team["deployment"]
    content = login(team["viewer"]).get(reverse("dashboard:deployment-detail", args=[deployment.pk])).content.decode()
    listed = re.findall(r'<li data-step="([a-z_]+)">([^<]+)</li>', content)
    assert listed == [(step.value, step.label) for step in ProgressStep.ordered()]
    script = re.search(r'<script id="progress-steps" type="application/json">(.*?)</script>', content, re.S)
    assert script, "the page hands the steps to dashboard.js"
    assert json.loads(script.group(1)) == {
        "order": ["downloading_model", "starting", "loading_model", "warming_up", "ready"],
        "ready": "ready",
        "failed": "failed",
    }
    assert "pulling" not in content  # nothing emits it


def test_the_script_copies_no_step_names() -> None:
    source = DASHBOARD_JS.read_text()
    assert 'getElementById("progress-steps")' in source
    literals = set(re.findall(r'"([a-z_]+)"', source))
    # "failed" is also the CSS class the list gets when a step failed; compared as a step, never.
    assert literals & set(ProgressStep.values) <= {"failed"}, "dashboard.js hard-codes step names"
    assert 'step === "' not in source and "pulling" not in source
