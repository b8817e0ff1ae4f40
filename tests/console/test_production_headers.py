"""Production settings pass Django's deployment checklist and send the HTTPS and CSP headers.

Run in subprocesses with a production environment, as a real start-up would.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

from tests.conftest import REPO_ROOT
from tests.console.test_settings import GOOD_PRODUCTION

# Django's check wants 50+ characters with variety; a real deployment generates one like this.
PRODUCTION = GOOD_PRODUCTION | {"HANGAR_SECRET_KEY": secrets.token_urlsafe(64)}

PROBE = """
import json, django
django.setup()
from django.test import Client
c = Client()
out = {}
plain = c.get("/login/")
out["plain"] = [plain.status_code, plain.get("Location", "")]
out["probe"] = c.get("/healthz").status_code
secure = c.get("/healthz", secure=True)
out["hsts"] = secure.get("Strict-Transport-Security", "")
out["csp"] = secure.get("Content-Security-Policy", "")
proxied = c.get("/healthz", HTTP_X_FORWARDED_PROTO="https")
out["proxied"] = [proxied.status_code, proxied.get("Strict-Transport-Security", "")]
print(json.dumps(out))
"""


def run(argv: list[str], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "DJANGO_", "DATABASE_", "REDIS_"))}
    clean |= values | {"DJANGO_SETTINGS_MODULE": "console.settings.production", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(argv, cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_check_deploy_has_no_warnings() -> None:
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_https_redirect_hsts_proxy_header_and_csp() -> None:
    values = PRODUCTION | {"HANGAR_ALLOWED_HOSTS": "testserver", "HANGAR_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    result = run([sys.executable, "-c", PROBE], values)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://testserver/login/"]
    assert seen["probe"] == 200  # the orchestrator's probes speak plain HTTP
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert seen["proxied"] == [200, seen["hsts"]]  # the proxy said HTTPS: no redirect
    assert "script-src 'self'" in seen["csp"] and "frame-ancestors 'none'" in seen["csp"]
    assert "unsafe-inline" not in seen["csp"].split("script-src", 1)[1].split(";", 1)[0]


def test_hsts_and_redirect_follow_their_settings() -> None:
    values = PRODUCTION | {"HANGAR_ALLOWED_HOSTS": "testserver", "HANGAR_SSL_REDIRECT": "false"}
    values |= {"HANGAR_HSTS_SECONDS": "600", "HANGAR_HSTS_PRELOAD": "false", "HANGAR_HSTS_INCLUDE_SUBDOMAINS": "no"}
    result = run([sys.executable, "-c", PROBE], values)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"][0] != 301 and seen["plain"][1] == "" and seen["hsts"] == "max-age=600"
    # Without the proxy header setting, a client's X-Forwarded-Proto is not believed.
    assert seen["proxied"] == [200, ""]


def test_a_bad_proxy_header_name_refuses_to_start() -> None:
    result = run(
        [sys.executable, "-c", "import django; django.setup()"], PRODUCTION | {"HANGAR_PROXY_SSL_HEADER": "X Proto"}
    )
    assert result.returncode != 0 and "HANGAR_PROXY_SSL_HEADER='X Proto' is not a header name" in result.stderr
