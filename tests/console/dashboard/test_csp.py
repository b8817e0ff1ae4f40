"""The dashboard's Content-Security-Policy, and templates that satisfy it.

The browser test (tests/e2e/test_dashboard_browser.py) collects the violations Chromium
reports on every page it visits; this checks the header and the templates' source.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.conftest import REPO_ROOT

TEMPLATES = sorted((REPO_ROOT / "console" / "templates").rglob("*.html"))
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_templates_have_no_inline_script(template: Any) -> None:
    source = template.read_text()
    assert not INLINE_SCRIPT.search(source), "scripts are files under /static/ (data: |json_script)"
    assert not EVENT_HANDLER.search(source), "handlers are attached by the static scripts"
    assert "javascript:" not in source.lower()
    assert "<style" not in source.lower(), "styles live in dashboard.css"


@pytest.mark.django_db
def test_dashboard_pages_carry_the_policy(team: dict[str, Any], login: Any) -> None:
    owner = login(team["owner"])
    pages = ["/", "/keys/", "/tokens/", f"/deployments/{team['deployment'].pk}/"]
    for client, path in [(owner, path) for path in pages] + [(Client(), "/login/")]:
        response = client.get(path)
        assert response.status_code == 200, path
        policy = dict(
            part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part.strip()
        )
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'", path
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'", path
        if path.startswith("/deployments/"):  # its data blocks are JSON, which the policy does not run
            assert b'type="application/json"' in response.content
