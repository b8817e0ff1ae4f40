"""The web server's start-up heap is frozen, so full collections do not walk it on every request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_asgi_application_freezes_its_start_up_heap() -> None:
    # A fresh interpreter, as uvicorn loads the application: the test process's own heap is not it.
    probe = (
        "import gc, json; import console.asgi; "
        "print(json.dumps({'frozen': gc.get_freeze_count(), 'tracked': len(gc.get_objects())}))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings.test", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    # Django, DRF, every view and serializer (the URL configuration is imported before freezing).
    assert counts["frozen"] > 100_000, counts
    # What is left for the collector to walk is a small fraction of it.
    assert counts["tracked"] < counts["frozen"] / 10, counts
