"""The dashboard scripts' own unit tests (``frontend/tests``, node's test runner), run by the suite."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.processes import REPO_ROOT

NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed (make test installs it with npm)")
def test_the_frontend_unit_tests_pass() -> None:
    done = subprocess.run(
        [str(NODE), "--test", "tests/"], cwd=REPO_ROOT / "frontend", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout, done.stdout[-2000:]
