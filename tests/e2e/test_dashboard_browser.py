"""End to end in a real Chromium: the product's processes, the dashboard, a deployment, the playground.

Starts the real product against the test database: ``uvicorn console.asgi:application``, a
Celery worker and Celery beat (plus the metrics scraper), then drives Debian's Chromium with
Playwright: log in, register the tiny model, have a platform admin add a local target and grant
it to the tenant, deploy, watch the phase reach Running and chart points arrive without
reloading, create an API key (secret shown once), chat in the playground with streamed tokens,
revoke the key, check that a viewer is denied the operator's actions, make a read-only personal
access token on the token page and revoke it, and assert that no page reported a
Content-Security-Policy violation. Every page is saved under ``artifacts/screenshots/``; the steps that passed
are written to ``artifacts/e2e/dashboard_steps.json``.

Never skipped when /usr/bin/chromium exists; no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from controlplane.deployments.models import Deployment, Replica, Target
from controlplane.tenancy.choices import Role
from tests.factories import MembershipFactory, PlatformAdminFactory, TenantFactory, UserFactory
from tests.support.ports import free_port
from tests.support.processes import Process, http_ok
from tests.support.waiting import wait_for
from tests.support.workers import redis_db

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
STEPS_FILE = REPO_ROOT / "artifacts" / "e2e" / "dashboard_steps.json"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
BROKER_DB = redis_db(12)  # a broker database of our own, apart from a developer's worker and the engine tests
PASSWORD = "pw-for-tests-1"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCRAPE_TASK = "workers.metrics_tasks.scrape_metrics"
CSP_MARKER = "[csp-violation]"
CSP_LISTENER = (
    "document.addEventListener('securitypolicyviolation', e => console.error("
    f"'{CSP_MARKER} ' + e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sourceFile || '') + ':' + e.lineNumber));"
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
]


class Processes:
    """The product's processes on the tests' harness (each in its own session)."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.env = env
        self.procs: dict[str, Process] = {}

    def start(self, name: str, argv: list[str]) -> None:
        self.procs[name] = Process(name, argv, log_path=self.logs / f"{name}.log", env=self.env).start()

    def log(self, name: str) -> str:
        return self.procs[name].log() if name in self.procs else ""

    def tails(self, chars: int = 6000) -> str:
        """The end of every process's log, the web process (dashboard and gateway) first."""
        names = sorted(self.procs, key=lambda name: name != "web")
        return "".join(f"\n{self.procs[name].report(chars)}" for name in names)

    def check_alive(self) -> None:
        for proc in self.procs.values():
            proc.check_alive()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.stop(grace=20)


def ensure_frontend_built() -> None:
    if (REPO_ROOT / "frontend" / "dist" / "hangar" / "dashboard.js").exists():
        return
    npm = shutil.which("npm")
    assert npm, "frontend/dist is missing and npm is not installed"
    subprocess.run([npm, "ci", "--prefix", "frontend"], cwd=REPO_ROOT, check=True)
    subprocess.run([npm, "run", "--prefix", "frontend", "build"], cwd=REPO_ROOT, check=True)


def scraper_scheduled_by_beat() -> bool:
    from workers.schedule import beat_schedule

    return any(entry.get("task") == SCRAPE_TASK for entry in beat_schedule().values())


@pytest.fixture
def product(transactional_db: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """uvicorn + Celery worker + beat (+ the scraper) on the test database; yields the base URL."""
    ensure_frontend_built()
    from django.conf import settings

    s = connection.settings_dict
    database_url = f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    broker = f"{settings.REDIS_URL.rsplit('/', 1)[0]}/{BROKER_DB}"
    import redis

    redis.Redis.from_url(broker).flushdb()
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker,
        "HANGAR_DATA_DIR": str(data_dir),
        "HANGAR_METRICS_INTERVAL": "1",
        "HANGAR_RESYNC_INTERVAL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    # WhiteNoise serves STATIC_ROOT when DEBUG is off; collect the built assets there.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=REPO_ROOT, env=env, check=True
    )
    port = free_port()
    procs = Processes(tmp_path, env)
    procs.start(
        "web",
        [str(VENV_BIN / "uvicorn"), "console.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
    )
    procs.start(
        "worker",
        [
            str(VENV_BIN / "celery"), "-A", "console", "worker", "-I", "workers.metrics_tasks",
            "--concurrency", "3", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"e2e-dashboard-{os.getpid()}@%h",
        ],
    )  # fmt: skip
    procs.start(
        "beat",
        [str(VENV_BIN / "celery"), "-A", "console", "beat", "--schedule", str(tmp_path / "beat.db"), "-l", "INFO"],
    )
    scraper = "beat"
    if not scraper_scheduled_by_beat():
        # Until workers.schedule lists the scrape task, run the same pass on the same interval here.
        scraper = "loop"
        procs.start(
            "scraper",
            [
                sys.executable, "-c",
                "import time, django; django.setup()\n"
                "from workers.metrics import scrape_with_lock\n"
                "while True:\n    scrape_with_lock(); time.sleep(1)  # pacing: the scrape interval\n",
            ],
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        procs.procs["web"].wait_ready(lambda: http_ok(base + "/login/"), 60, "uvicorn answering", interval=0.2)
        procs.procs["worker"].wait_ready(lambda: "ready." in procs.log("worker"), 90, "celery worker ready")
        yield {"base": base, "procs": procs, "data_dir": data_dir, "scraper": scraper}
    finally:
        procs.stop()
        _remove_local_replicas(data_dir)


def _remove_local_replicas(data_dir: Path) -> None:
    """Stop replica processes a failed run left behind (normally the delete step removed them)."""
    from django.test import override_settings

    from workers.drivers import local_driver

    with override_settings(DATA_DIR=data_dir):
        driver = local_driver()
        for observed in driver.list():
            with contextlib.suppress(Exception):
                driver.remove(observed.backend_id)


class Steps:
    """Records which steps of the scenario passed (the report quotes this file).

    A failed step is re-raised with the product's process logs and ``diagnose()`` attached, so a
    failure seen once in a long run can be explained from its report alone.
    """

    def __init__(self, procs: Processes) -> None:
        self.results: list[dict[str, Any]] = []
        self.procs = procs
        self.diagnose: Callable[[], str] | None = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except Exception as exc:
            self._record(name, "failed", started, repr(exc)[:500])
            raise AssertionError(f"step {name!r} failed: {exc}{self._context()}") from exc
        except BaseException as exc:
            self._record(name, "failed", started, repr(exc)[:500])
            raise
        self._record(name, "passed", started)

    def _context(self) -> str:
        extra = ""
        if self.diagnose is not None:
            try:
                extra = f"\n--- diagnosis ---\n{self.diagnose()}"
            except Exception as exc:  # the report must not hide the original failure
                extra = f"\n--- diagnosis failed: {exc!r} ---"
        return extra + self.procs.tails()

    def _record(self, name: str, outcome: str, started: float, error: str = "") -> None:
        self.results.append(
            {"step": name, "outcome": outcome, "seconds": round(time.monotonic() - started, 2), "error": error}
        )
        STEPS_FILE.parent.mkdir(parents=True, exist_ok=True)
        STEPS_FILE.write_text(json.dumps(self.results, indent=2) + "\n")
        print(f"[e2e-dashboard] {outcome:6} {name} ({self.results[-1]['seconds']} s)")


def describe_key(token: str) -> str:
    """What the test database holds for ``token``: tells a token that does not parse, a key row
    the gateway could not find, and a digest made with another pepper apart (never prints it)."""
    from django.conf import settings

    from controlplane.core import secrets as tokens
    from controlplane.keys.choices import KEY_PREFIX
    from controlplane.keys.models import ApiKey

    where = f"database {connection.settings_dict['NAME']!r}"
    parsed = tokens.parse(token, KEY_PREFIX)
    if parsed is None:
        return f"the secret read from the page does not parse as a key ({len(token)} chars)"
    row = ApiKey.objects.filter(key_id=parsed.key_id).values("pk", "digest", "revoked_at", "expires_at").first()
    if row is None:
        return f"{where} has no key with id {parsed.key_id} ({ApiKey.objects.count()} keys in all)"
    matches = tokens.digest_matches(parsed.secret, row["digest"])
    pepper = "the default" if settings.HANGAR_KEY_PEPPER == settings.INSECURE_DEFAULT_PEPPER else "a custom"
    return (
        f"{where} has key {row['pk']} (id {parsed.key_id}, revoked_at={row['revoked_at']}, "
        f"expires_at={row['expires_at']}); its digest matches the secret with the test process's "
        f"pepper ({pepper} one): {matches}"
    )


@dataclass
class Journey:
    """What the steps of the end-to-end test share: the browser, the owner's page, and what earlier steps made."""

    base: str
    browser: Any
    page: Any
    step: Steps
    tiny_model_dir: Path
    deployment: Any = None  # made by "deploy on the local driver"
    secret: str = ""  # made by "create an API key"
    # Content-Security-Policy violations Chromium reported on any page of any context.
    csp_violations: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> Any:
        """Collect the page's CSP violations: the securitypolicyviolation events (logged by an
        init script, which the policy does not govern) and Chromium's own console reports."""
        page.add_init_script(CSP_LISTENER)

        def seen(message: Any) -> None:
            text = message.text
            if text.startswith(CSP_MARKER) or "Content Security Policy" in text:
                self.csp_violations.append(f"{page.url}: {text[:300]}")

        page.on("console", seen)
        return page

    def shot(self, page: Any, name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def login(self, page: Any, username: str, landing: str = "/") -> None:
        page.goto(self.base + "/login/")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(self.base + landing)

    def new_page(self) -> tuple[Any, Any]:
        """Another browser context (another user's session) and its page, accepting dialogs."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        page = self.watch(context.new_page())
        page.on("dialog", lambda dialog: dialog.accept())
        return context, page


def test_dashboard_end_to_end(product: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from playwright.sync_api import expect, sync_playwright

    tenant = TenantFactory(name="Acme", slug="acme")
    owner = UserFactory(username="olivia")
    viewer = UserFactory(username="victor")
    MembershipFactory(user=owner, tenant=tenant, role=Role.OWNER)
    MembershipFactory(user=viewer, tenant=tenant, role=Role.VIEWER)
    PlatformAdminFactory(username="paula")  # adds the target and grants it; a member of no tenant
    # Playwright's sync API runs an event loop in this thread; the ORM checks below are plain reads.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    step = Steps(product["procs"])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            expect.set_options(timeout=15_000)
            journey = Journey(product["base"], browser, page, step, tiny_model_dir)
            journey.watch(page)
            for name, run in JOURNEY:
                with step(name):
                    run(journey)
        finally:
            browser.close()
    product["procs"].check_alive()


def _log_in(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/")
    expect(page).to_have_url(base + "/login/?next=/")
    j.shot(page, "01-login")
    j.login(page, "olivia")
    expect(page.get_by_test_id("whoami")).to_contain_text("olivia · owner")
    expect(page.locator(".ws-state")).to_have_text("live")  # the tenant websocket
    j.shot(page, "02-overview-empty")


def _register_model(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/models/")
    page.fill("#id_name", "tiny")
    page.fill("#id_source", "relative/path")
    page.click("#model-register button[type=submit]")
    expect(page.locator('[data-field-error="source"]')).to_contain_text("absolute")
    page.fill("#id_source", str(j.tiny_model_dir))
    page.click("#model-register button[type=submit]")
    expect(page.locator("#memory-estimate")).to_contain_text("float32")
    j.shot(page, "03-model-detail")
    page.goto(base + "/models/")
    j.shot(page, "04-models")


def _add_and_grant_target(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    admin_context, apage = j.new_page()
    j.login(apage, "paula", landing="/platform/targets/")
    expect(apage.get_by_test_id("whoami")).to_contain_text("paula · platform admin")
    apage.fill("#id_name", "this-machine")
    apage.select_option("#id_kind", "local")
    apage.click("#target-add button[type=submit]")
    expect(apage.locator("h1")).to_contain_text("this-machine")
    apage.select_option("#target-grant #id_tenant", "acme")
    apage.click("#target-grant button[type=submit]")
    expect(apage.locator('#grants [data-grant="acme"]')).to_be_visible()
    wait_for(  # check_target has run: the screenshot shows its result
        lambda: Target.objects.filter(name="this-machine", health_checked_at__isnull=False).exists(),
        30,
        "the new target checked",
    )
    apage.reload()
    j.shot(apage, "05-platform-target-detail")
    admin_context.close()
    page.goto(base + "/targets/")
    expect(page.locator('#targets [data-target="this-machine"]')).to_be_visible()
    assert page.locator("#target-add").count() == 0  # tenants see granted targets only
    j.shot(page, "06-targets")


def _deploy(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/deployments/new/")
    page.fill("#id_name", "tiny-chat")
    page.select_option("#id_model", label="tiny")
    page.select_option("#id_target", label="this-machine")
    page.fill("#id_served_model_name", "tiny-chat")
    page.fill("#id_max_model_len", "512")
    page.fill("#id_max_tokens_cap", "256")
    j.shot(page, "07-deployment-new")
    page.click("#deployment-new button[type=submit]")
    expect(page.get_by_test_id("phase")).to_be_visible()
    j.deployment = Deployment.objects.get(name="tiny-chat")


def _reach_running(j: Journey) -> None:
    from playwright.sync_api import expect

    page = j.page
    page.evaluate("window.__noReload = true")
    expect(page.locator(".ws-state")).to_have_text("live")
    expect(page.get_by_test_id("phase")).to_have_text("Running", timeout=420_000)
    assert page.evaluate("window.__noReload === true"), "the page was reloaded"
    expect(page.locator("[data-progress] li[data-step=ready]")).to_have_class("done")
    expect(page.locator("#events")).to_contain_text("Created")


def _chart_points(j: Journey) -> None:
    from playwright.sync_api import expect

    page = j.page
    points = int(page.locator('[data-chart="tps"]').get_attribute("data-points") or 0)
    page.wait_for_function(
        "n => Number(document.querySelector('[data-chart=tps]').dataset.points) >= n + 2",
        arg=points,
        timeout=30_000,
    )
    assert page.evaluate("window.__noReload === true")
    expect(page.locator("#replicas")).to_contain_text("ready")
    expect(page.locator("#logs pre.logs").first).not_to_be_empty(timeout=20_000)
    j.shot(page, "08-deployment-running")


def _create_key(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/keys/")
    page.fill("#id_name", "e2e")
    page.fill("#id_rpm_limit", "600")
    page.click("#key-create button[type=submit]")
    secret = page.get_by_test_id("secret").inner_text().strip()
    assert secret.startswith("hgr_")
    j.secret = secret
    j.step.diagnose = lambda: describe_key(secret)
    j.shot(page, "09-keys-secret-once")
    page.goto(base + "/keys/")
    assert secret not in page.content()
    expect(page.locator("#keys")).to_contain_text("e2e")


def _playground(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/playground/")
    page.select_option("#pg-model", "tiny-chat")
    page.fill("#pg-key", j.secret)
    page.fill("#pg-max", "48")
    page.fill("#pg-prompt", "Tell me about the harbor.")
    page.evaluate(
        """() => { window.__chunks = [];
          new MutationObserver(() => window.__chunks.push(performance.now()))
            .observe(document.getElementById('chat-log'), {subtree: true, characterData: true, childList: true}); }"""
    )
    page.click("#chat-send")
    expect(page.locator("#chat-status")).to_contain_text("chunks in", timeout=60_000)
    answer = page.locator("#chat-log .msg-assistant .content").last
    assert answer.inner_text().strip(), "no tokens arrived"
    assert int(answer.get_attribute("data-chunks") or 0) >= 2
    times = page.evaluate("window.__chunks")
    assert len({round(t) for t in times}) >= 3, "tokens did not arrive incrementally"
    j.shot(page, "10-playground")
    # The scraper saw those tokens: the deployment's tokens/s chart has a point above zero.
    page.goto(base + f"/deployments/{j.deployment.pk}/")
    page.wait_for_function(
        "() => window.hangarCharts && window.hangarCharts.tps.data[1].some(v => v > 0)", timeout=30_000
    )


def _revoke_key(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/keys/")
    page.locator("#keys tr", has_text="e2e").get_by_role("button", name="Revoke").click()
    expect(page.locator("#keys tr", has_text="e2e")).to_contain_text("revoked")
    j.shot(page, "11-keys-revoked")
    page.goto(base + "/playground/")
    page.fill("#pg-key", j.secret)
    page.fill("#pg-prompt", "Still there?")
    page.click("#chat-send")
    expect(page.locator("#chat-status")).to_contain_text("error", timeout=20_000)


def _other_pages(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base, pk = j.page, j.base, j.deployment.pk
    for name, path in [
        ("12-overview", "/"),
        ("13-usage", "/usage/"),
        ("14-members", "/members/"),
        ("15-audit", "/audit/"),
    ]:
        page.goto(base + path)
        expect(page.locator("h1")).to_be_visible()
        j.shot(page, name)
    page.goto(base + "/")
    expect(page.locator(f'[data-deployment-row="{pk}"]')).to_contain_text("Running")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + f"/deployments/{pk}/")
    j.shot(page, "16-deployment-phone")
    page.set_viewport_size({"width": 1280, "height": 900})


def _viewer_denied(j: Journey) -> None:
    from playwright.sync_api import expect

    base, pk = j.base, j.deployment.pk
    viewer_context = j.browser.new_context(viewport={"width": 1280, "height": 900})
    vpage = j.watch(viewer_context.new_page())
    j.login(vpage, "victor")
    vpage.goto(base + f"/deployments/{pk}/")
    expect(vpage.get_by_test_id("phase")).to_have_text("Running")
    assert vpage.get_by_test_id("deployment-actions").count() == 0
    assert vpage.locator("#scale-form").count() == 0
    status = vpage.evaluate(
        """async (url) => {
            const token = document.querySelector('[name=csrfmiddlewaretoken]').value;
            const r = await fetch(url, {method: 'POST', headers: {'X-CSRFToken': token}});
            return r.status; }""",
        f"/deployments/{pk}/stop/",
    )
    assert status == 403
    vpage.goto(base + "/keys/")
    assert vpage.locator("#key-create").count() == 0
    j.shot(vpage, "17-viewer-deployment")
    vpage.goto(base + "/audit/")
    expect(vpage.locator("[data-denied]")).to_be_visible()
    viewer_context.close()
    assert Deployment.objects.get(pk=pk).desired_state == "running"


def _access_tokens(j: Journey) -> None:
    """A read-only personal access token from the token page: it reads, it cannot write, and
    revoking it on the page stops it."""
    import httpx
    from playwright.sync_api import expect

    page, base = j.page, j.base
    page.goto(base + "/tokens/")
    page.fill("#id_name", "e2e-reader")
    page.check("#token-create input[name=scopes][value=read]")
    page.click("#token-create button[type=submit]")
    token = page.get_by_test_id("token-secret").inner_text().strip()
    assert token.startswith("hgp_")
    j.shot(page, "19-tokens-secret-once")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(base + "/api/v1/deployments/", headers=headers).status_code == 200
    refused = httpx.post(base + "/api/v1/keys/", headers=headers, json={"name": "nope"})
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
    page.goto(base + "/tokens/")
    assert token not in page.content()
    row = page.locator("#tokens tr", has_text="e2e-reader")
    expect(row).to_contain_text("127.0.0.1")  # where it was last used from
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("#tokens tr", has_text="e2e-reader")).to_contain_text("revoked")
    assert httpx.get(base + "/api/v1/deployments/", headers=headers).status_code == 401


def _no_csp_violations(j: Journey) -> None:
    response = j.page.goto(j.base + "/")
    policy = response.headers.get("content-security-policy", "") if response else ""
    assert "script-src 'self'" in policy, policy
    assert j.csp_violations == [], "\n".join(j.csp_violations)


def _delete(j: Journey) -> None:
    from playwright.sync_api import expect

    page, base, pk = j.page, j.base, j.deployment.pk
    page.goto(base + f"/deployments/{pk}/delete/")
    j.shot(page, "18-delete-confirm")
    page.fill("#id_confirm", "tiny-chat")
    page.click("#delete-form button[type=submit]")
    expect(page).to_have_url(base + "/")
    wait_for(lambda: not Deployment.objects.filter(pk=pk).exists(), 90, "the reconciler removes the deployment")
    assert not Replica.objects.filter(deployment_id=pk).exists()


# The steps in order, each recorded (name, outcome, seconds) by ``Steps``; later steps use what earlier ones made.
JOURNEY: list[tuple[str, Callable[[Journey], None]]] = [
    ("log in", _log_in),
    ("register the tiny model", _register_model),
    ("a platform admin adds a local target and grants it to the tenant", _add_and_grant_target),
    ("deploy on the local driver", _deploy),
    ("phase reaches Running without reloading", _reach_running),
    ("chart points arrive live", _chart_points),
    ("create an API key; its secret is shown exactly once", _create_key),
    ("chat in the playground with streamed tokens", _playground),
    ("revoke the key; the gateway refuses it", _revoke_key),
    ("the other pages render", _other_pages),
    ("a viewer is denied the operator's actions", _viewer_denied),
    ("a read-only access token from the token page reads, cannot write, is revoked", _access_tokens),
    ("delete the deployment; its replicas go away", _delete),
    ("no page broke the Content-Security-Policy", _no_csp_violations),
]
