"""The tenant's overview shows usage against quota as bars; a refusal reads as a form error."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from controlplane.deployments.models import Deployment
from tests.factories import DeploymentFactory

pytestmark = pytest.mark.django_db


def bar(content: str, resource: str) -> str:
    match = re.search(
        rf'<div data-quota="{resource}".*?</div>\s*</div>\s*<span class="num">(.*?)</span>', content, re.S
    )
    assert match, f"no {resource} bar"
    return match.group(0)


def test_overview_shows_limited_resources_as_bars(login: Any, team: dict[str, Any]) -> None:
    tenant = team["tenant"]  # the team's deployment: 1 replica, 1 CPU, 2048 MB, no GPU
    DeploymentFactory(tenant=tenant, gpus=1, replicas=2, max_replicas=2, cpus=0.25, memory_mb=256)
    tenant.quota_gpus, tenant.quota_cpus, tenant.quota_deployments = 4, 1.5, 2
    tenant.save()
    content = login(team["viewer"]).get("/").content.decode()
    gpus = bar(content, "gpus")
    assert "width: 50%" in gpus and "2 / 4 quota" in gpus
    cpus = bar(content, "cpus")
    assert "width: 100%" in cpus and "1.50 / 1.50 quota" in cpus and "var(--warn)" in cpus  # full
    assert "2 / 2 quota" in bar(content, "deployments")
    assert 'data-quota="memory_mb"' not in content  # unlimited: no bar


def test_overview_without_quotas_has_no_quota_card(login: Any, team: dict[str, Any]) -> None:
    assert 'id="quota"' not in login(team["viewer"]).get("/").content.decode()


def test_a_refused_scale_says_why_on_the_page(login: Any, team: dict[str, Any]) -> None:
    tenant, deployment = team["tenant"], team["deployment"]
    Deployment.objects.filter(pk=deployment.pk).update(max_replicas=4)
    tenant.quota_replicas = 2
    tenant.save()
    response = login(team["operator"]).post(
        reverse("dashboard:deployment-scale", args=[deployment.pk]), {"replicas": 3}
    )
    assert response.status_code == 400
    assert "Quota exceeded (replicas: 1 in use + 2 requested &gt; 2 allowed)" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.replicas == 1
