"""The model store in a real Chromium (issue 14 items 1 and 4).

On the product's real processes (``product`` of ``test_dashboard_browser``):

- an operator uploads the tiny model from the dashboard's upload page, in 1 MiB chunks; one chunk
  reaches the server but its answer is lost, one never reaches it, and the page resumes from the
  offsets the server holds; the operator pauses with chunks held in flight, reloads, resumes the
  open upload with the same files, and lands on the registered model's page;
- a model that exists only in an S3 server (moto) is deployed, and the deployment page shows the
  ``Downloading model`` step live with bytes done / total and the rate, then Running.

Screenshots go to ``artifacts/screenshots/store-*.png``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.catalog import services as catalog
from controlplane.catalog.models import Model
from controlplane.core.context import SYSTEM
from controlplane.deployments import services
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
from tests.factories import MembershipFactory, TargetFactory, TenantFactory, UserFactory
from tests.support.s3_server import S3Server, s3_server
from tests.support.throttle import ThrottledProxy, throttled_proxy
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
]

CHUNK = 1024 * 1024
PADDING_MIB = 320  # bytes to move, through a proxy at DOWNLOAD_RATE: the download lasts about 8 s
DOWNLOAD_RATE = 40 * 1024 * 1024  # bytes per second, whatever the machine (moto alone moved 320 MiB in 1 s)


@pytest.fixture
def s3(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        server.client().create_bucket(Bucket="weights")
        padded = tmp_path_factory.mktemp("padded")
        for entry in tiny_model_dir.iterdir():
            (padded / entry.name).write_bytes(entry.read_bytes())
        # A second weights file the runtime does not load (it reads model.safetensors): bytes to move.
        count = PADDING_MIB * 1024 * 1024 // 4
        header = json.dumps({"pad": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]}}).encode()
        with (padded / "padding.safetensors").open("wb") as fh:
            fh.write(struct.pack("<Q", len(header)) + header)
            for _ in range(PADDING_MIB):
                fh.write(os.urandom(1024 * 1024))
        server.upload_dir(padded, bucket="weights", prefix="tiny-padded")
        yield server


@pytest.fixture
def s3_proxy(s3: S3Server) -> Iterator[ThrottledProxy]:
    """The tenant's endpoint: a proxy in front of moto, throttled once the download to watch begins."""
    with throttled_proxy(s3.url) as proxy:
        yield proxy


@pytest.fixture
def store_env(s3: S3Server, s3_proxy: ThrottledProxy, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Before ``product``: small chunks, and the S3 server (and its proxy) on the endpoints a
    credential may name."""
    monkeypatch.setenv("HANGAR_UPLOAD_CHUNK_BYTES", str(CHUNK))
    monkeypatch.setenv("HANGAR_MODEL_SOURCE_ENDPOINTS", f"{s3.url},{s3_proxy.url}")
    settings.HANGAR_MODEL_SOURCE_ENDPOINTS = [s3.url, s3_proxy.url]


def upload_through_a_flaky_network(page: Any, files: list[str]) -> int:
    """Upload ``files`` from the upload page; returns how many chunk requests the page made."""
    from playwright.sync_api import Route, expect

    chunks = {"n": 0}
    held: list[Route] = []

    def flaky_network(route: Route) -> None:
        chunks["n"] += 1
        if chunks["n"] == 3:  # reaches the server, but the answer is lost on the way back
            route.fetch()
            route.abort("connectionreset")
        elif chunks["n"] == 5:  # never reaches the server
            route.abort("connectionreset")
        elif chunks["n"] >= 8 and not held:  # held in flight until the operator pauses
            held.append(route)
        else:
            route.continue_()

    # Paused with a chunk in flight, after two lost chunks were resumed.
    page.route("**/api/v1/uploads/*/chunk/**", flaky_network)
    page.fill("#up-name", "tiny-uploaded")
    page.fill("#up-description", "sent from the browser")
    page.set_input_files("#up-files", files)
    page.click("#up-start")
    for _ in range(600):  # the page's requests reach the handler only while Playwright runs
        if held:
            break
        page.wait_for_timeout(100)  # pacing: the route handler runs only while Playwright does
    assert held, f"no chunk held in flight after {chunks['n']} chunk requests"
    page.click("#up-cancel")
    held[0].abort("connectionreset")
    expect(page.locator("#up-error")).to_contain_text("Paused at")
    page.screenshot(path=str(SCREENSHOTS / "store-upload-paused.png"), full_page=True)

    # Reloaded: the open upload is listed with what the server holds; resumed with the same files.
    page.reload()
    row = page.locator("#open-uploads tr[data-upload]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("tiny-uploaded")
    page.click("[data-resume]")
    page.set_input_files("#up-files", files)
    page.click("#up-start")
    page.wait_for_url("**/models/*/", timeout=60_000)
    expect(page.locator("h1")).to_contain_text("tiny-uploaded")
    page.screenshot(path=str(SCREENSHOTS / "store-uploaded-model.png"), full_page=True)
    return chunks["n"]


def deploy_from_s3_and_watch(page: Any, base: str, s3: S3Server, proxy: ThrottledProxy, tenant: Any) -> None:
    """Deploy the padded model that exists only in S3; the page shows the download live."""
    from playwright.sync_api import expect

    # The tenant's endpoint is a proxy in front of moto: registration reads at full speed, the
    # replica's download at DOWNLOAD_RATE, so its live step lasts seconds on any machine.
    s3.credential(tenant, endpoint_url=proxy.url)
    remote = catalog.model_register(
        actor=SYSTEM, tenant=tenant, name="tiny-s3", source="s3://weights/tiny-padded", credential="minio"
    )
    proxy.rate = DOWNLOAD_RATE
    deployment = services.deployment_create(
        actor=SYSTEM,
        tenant=tenant,
        model=remote,
        target=TargetFactory(tenant=tenant, kind="local"),
        data={"name": "tiny-s3", "replicas": 0, "max_replicas": 1},
    )
    page.goto(f"{base}/deployments/{deployment.pk}/")
    expect(page.locator(".ws-state")).to_have_text("live")  # subscribed before the download starts
    services.deployment_scale(actor=SYSTEM, deployment=deployment, replicas=1)
    # One look at both, as the page shows them at one moment: the step and its bytes and rate.
    total = f"/ {remote.size_bytes / CHUNK:.1f} MiB at "
    page.wait_for_function(
        """total => {
            const step = document.querySelector('li[data-step="downloading_model"].current');
            const detail = document.querySelector("[data-progress-detail]");
            return step !== null && detail !== null && detail.textContent.includes(total);
        }""",
        arg=total,
        timeout=120_000,
    )
    page.screenshot(path=str(SCREENSHOTS / "store-downloading.png"), full_page=True)
    wait_for(lambda: Deployment.objects.get(pk=deployment.pk).phase == Phase.RUNNING, 240, "Running", interval=0.5)
    expect(page.locator('li[data-step="downloading_model"]')).to_have_class(re.compile(r"\bdone\b"))
    page.screenshot(path=str(SCREENSHOTS / "store-running.png"), full_page=True)
    page.goto(f"{base}/models/{remote.pk}/")
    expect(page.locator("body")).to_contain_text("Cached on")


def test_upload_resume_and_download_progress_in_the_dashboard(
    store_env: None,
    s3: S3Server,
    s3_proxy: ThrottledProxy,
    product: dict[str, Any],  # noqa: F811 - the fixture imported above
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = product["base"]
    tenant = TenantFactory(name="Store Co", slug="store-co")
    operator = UserFactory(username="stella")
    MembershipFactory(user=operator, tenant=tenant, role=Role.OPERATOR)
    files = sorted(str(p) for p in tiny_model_dir.iterdir() if p.is_file())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            expect.set_options(timeout=30_000)
            page.goto(base + "/login/")
            page.fill("#id_username", "stella")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.goto(base + "/models/")
            page.click("#upload-link")
            expect(page.locator("h1")).to_have_text("Upload a model")
            requests = upload_through_a_flaky_network(page, files)

            model = Model.objects.get(tenant=tenant, name="tiny-uploaded")
            assert model.description == "sent from the browser"
            # 15 MiB of weights in 1 MiB chunks: every chunk sent once, plus the two that were lost.
            assert requests >= (tiny_model_dir / "model.safetensors").stat().st_size // CHUNK + 2, requests
            sent = {e["name"]: e["sha256"] for e in model.manifest}
            expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiny_model_dir.iterdir()}
            assert sent == expected
            stored = Path(model.source)
            assert (stored / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()

            deploy_from_s3_and_watch(page, base, s3, s3_proxy, tenant)
        finally:
            browser.close()
