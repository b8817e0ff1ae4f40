"""The dashboard's rollout panel, revisions and their actions (issue 13 items 2 and 4)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from controlplane.core.context import SYSTEM
from controlplane.deployments import rollouts, services
from controlplane.deployments.choices import Phase
from controlplane.deployments.models import Deployment, Rollout


def _canary(deployment: Any) -> Deployment:
    rollouts.rollout_policy_set(actor=SYSTEM, deployment=deployment, data={"strategy": "canary"})
    Deployment.objects.filter(pk=deployment.pk).update(phase=Phase.RUNNING)
    deployment.refresh_from_db()
    return services.deployment_update(actor=SYSTEM, deployment=deployment, data={"max_batch_size": 64})


def test_panel_shows_the_canary_and_revisions_to_viewers_without_buttons(login: Any, team: dict[str, Any]) -> None:
    deployment = _canary(team["deployment"])
    url = reverse("dashboard:deployment-rollout", args=[deployment.pk])
    viewer = login(team["viewer"]).get(url).content.decode()
    assert 'data-testid="canary-weight">10%' in viewer
    assert 'data-revision="2"' in viewer and 'data-revision="1"' in viewer
    assert "<code>max_batch_size</code>" in viewer  # revision 1 differs from the current one there
    assert "canary-promote" not in viewer and "Roll back</button>" not in viewer
    operator = login(team["operator"]).get(url).content.decode()
    assert "canary-promote" in operator and "Roll back</button>" in operator


def test_abort_from_the_dashboard_shows_the_notice(login: Any, team: dict[str, Any]) -> None:
    deployment = _canary(team["deployment"])
    client = login(team["operator"])
    assert (
        login(team["viewer"]).post(reverse("dashboard:deployment-canary-abort", args=[deployment.pk])).status_code
        == 403
    )
    client = login(team["operator"])
    response = client.post(reverse("dashboard:deployment-canary-abort", args=[deployment.pk]))
    assert response.status_code == 302
    assert Rollout.objects.get(deployment=deployment).state == "RolledBack"
    panel = client.get(reverse("dashboard:deployment-rollout", args=[deployment.pk])).content.decode()
    assert 'data-testid="rollout-notice"' in panel and "Aborted from the dashboard" in panel


def test_rollback_and_promote_from_the_dashboard(login: Any, team: dict[str, Any]) -> None:
    deployment = _canary(team["deployment"])
    client = login(team["operator"])
    client.post(reverse("dashboard:deployment-canary-promote", args=[deployment.pk]))
    assert Rollout.objects.get(deployment=deployment).state == "Promoted"
    response = client.post(reverse("dashboard:deployment-rollback", args=[deployment.pk]), {"revision": "1"})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.template_generation == 3 and deployment.max_batch_size == 32
    bad = client.post(reverse("dashboard:deployment-rollback", args=[deployment.pk]), {"revision": "x"}, follow=True)
    assert b"Choose a revision." in bad.content
