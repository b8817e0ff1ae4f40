"""The dashboard shows a canary live in a real Chromium (issue 13 items 2 and 4).

On the product's real processes (``product`` of ``test_dashboard_browser``): a deployment of the
tiny model with a canary policy; a platform admin switches faults on (a bad revision on purpose);
users' traffic goes through the gateway; the owner watches the deployment page, without
reloading, show the canary's weight, then the analysis of canary against stable, then the
rollback notice, and the revisions list. Screenshots go to ``artifacts/screenshots/canary-*.png``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from controlplane.core.context import SYSTEM, Actor
from controlplane.deployments import revisions, rollouts, services
from controlplane.deployments.choices import Phase
from controlplane.deployments.models import Deployment
from controlplane.tenancy.choices import Role
from tests.e2e.test_dashboard_browser import (  # noqa: F401 - product is a fixture
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    SCREENSHOTS,
    product,
)
from tests.factories import (
    ApiKeyFactory,
    MembershipFactory,
    ModelFactory,
    PlatformAdminFactory,
    TargetFactory,
    TenantFactory,
    UserFactory,
)
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
]


@pytest.fixture
def faults_allowed(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Before ``product``: its worker may apply faults, and this process may write them."""
    monkeypatch.setenv("HANGAR_FAULT_INJECTION", "true")
    settings.HANGAR_FAULT_INJECTION = True


def _users(base: str, token: str, stop: threading.Event) -> Iterator[threading.Thread]:
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)

    def loop() -> None:
        while not stop.is_set():
            # The canary's injected failures are what the analysis is meant to catch.
            with contextlib.suppress(openai.APIError):
                client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
                )

    for _ in range(2):
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        yield thread


def test_canary_weight_analysis_and_rollback_show_live(
    faults_allowed: None,
    product: dict[str, Any],  # noqa: F811 - the fixture imported above
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = product["base"]
    tenant = TenantFactory(name="Canary Co", slug="canary-co")
    owner = UserFactory(username="cora")
    MembershipFactory(user=owner, tenant=tenant, role=Role.OWNER)
    model = ModelFactory(tenant=tenant, source=str(tiny_model_dir))
    target = TargetFactory(tenant=tenant, kind="local")
    deployment = services.deployment_create(
        actor=SYSTEM,
        tenant=tenant,
        model=model,
        target=target,
        data={"name": "tiny", "served_model_name": "tiny", "replicas": 1, "max_batch_size": 8},
    )
    rollouts.rollout_policy_set(
        actor=SYSTEM,
        deployment=deployment,
        data={
            "strategy": "canary",
            "steps": [{"weight": 50, "pause_seconds": 600}, {"weight": 100}],
            "analysis": {"min_requests": 15, "max_error_rate": 0.1},
        },
    )
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).phase == Phase.RUNNING, 240, "Running", interval=0.5)
    token = ApiKeyFactory(tenant=tenant, name="users").secret
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            expect.set_options(timeout=30_000)
            page.goto(base + "/login/")
            page.fill("#id_username", "cora")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(base + "/")
            page.goto(base + f"/deployments/{deployment.pk}/")
            expect(page.get_by_test_id("revisions")).to_contain_text("Created")

            # A bad revision, on purpose: the page shows the canary without a reload.
            admin = Actor(user=PlatformAdminFactory(), via="api")
            revisions.deployment_faults_set(actor=admin, deployment=deployment, faults={"error_rate": 0.5})
            expect(page.get_by_test_id("canary-weight")).to_have_text("50%")
            expect(page.locator("[data-revision='2']")).to_contain_text("Fault injection")
            page.screenshot(path=str(SCREENSHOTS / "canary-started.png"), full_page=True)

            threads = list(_users(base, token, stop))
            expect(page.get_by_test_id("canary-analysis")).to_contain_text("canary", timeout=180_000)
            page.screenshot(path=str(SCREENSHOTS / "canary-analysis.png"), full_page=True)

            notice = page.get_by_test_id("rollout-notice")
            expect(notice).to_contain_text("Rolled back", timeout=180_000)
            expect(notice).to_contain_text("error rate")
            expect(page.get_by_test_id("rollout-state")).to_have_text("RolledBack")
            expect(page.get_by_test_id("canary-verdict")).to_have_text("fail")
            expect(page.get_by_test_id("phase")).to_have_text("RolledBack")
            page.screenshot(path=str(SCREENSHOTS / "canary-rolled-back.png"), full_page=True)
        finally:
            stop.set()
            browser.close()
    for thread in threads:
        thread.join(timeout=60)
    assert Deployment.objects.get(pk=deployment.pk).template_generation == 1
    product["procs"].check_alive()
