"""The fetch command (``python -m workers.runtime.fetch``) as the runtime image runs it: from a copy
of exactly what ``deploy/images/build`` puts into the image (``workers/__init__.py`` and
``workers/runtime/``), with Django and the control plane unimportable, against a real S3 server
(moto, with authentication): progress as JSON lines, a verified model, and a clear exit code and
message for a missing key, a wrong secret, a checksum mismatch and a bad plan. The secret never
appears in what it prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.hf_hub import fake_hub
from tests.support.ports import free_port
from tests.support.processes import REPO_ROOT
from tests.support.s3_server import S3Server, s3_server
from workers.runtime.fetch import EXIT_DENIED, EXIT_MISMATCH, EXIT_NOT_FOUND, EXIT_TEMPORARY, EXIT_USAGE
from workers.runtime.store.manifest import manifest_hash

LAUNCHER = """\
import runpy, sys
# As in the runtime image, where none of these exist: importing any of them fails.
for name in ("django", "rest_framework", "channels", "celery", "controlplane", "console"):
    sys.modules[name] = None
sys.argv[0] = "python -m workers.runtime.fetch"
runpy.run_module("workers.runtime.fetch", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``/app`` of the runtime image: what build_runtime copies, and nothing else of the repository."""
    app = tmp_path_factory.mktemp("app")
    (app / "workers").mkdir()
    shutil.copy(REPO_ROOT / "workers" / "__init__.py", app / "workers" / "__init__.py")
    shutil.copytree(
        REPO_ROOT / "workers" / "runtime", app / "workers" / "runtime", ignore=shutil.ignore_patterns("__pycache__")
    )
    (app / "launch_fetch.py").write_text(LAUNCHER)
    return app


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        server.client().create_bucket(Bucket="weights")
        server.upload_dir(tiny_model_dir, bucket="weights", prefix="llama/tiny")
        yield server


def manifest_of(model_dir: Path) -> list[dict[str, Any]]:
    import hashlib

    return [
        {
            "name": p.relative_to(model_dir).as_posix(),
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    ]


def plan_for(s3: S3Server, manifest: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return {
        "source": "s3://weights/llama/tiny",
        "content_hash": manifest_hash(manifest),
        "manifest": manifest,
        "endpoint_url": s3.url,
        "region": "us-east-1",
        **overrides,
    }


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stdout, self.stderr = proc.stdout, proc.stderr
        self.events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    def last(self) -> dict[str, Any]:
        return self.events[-1]


def fetch(
    image_tree: Path, tmp_path: Path, plan: dict[str, Any] | str, credentials: dict[str, str] | None, **env: str
) -> Run:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "plan.json").write_text(plan if isinstance(plan, str) else json.dumps(plan))
    args = ["--plan", str(tmp_path / "plan.json"), "--cache", str(tmp_path / "cache")]
    if credentials is not None:
        (tmp_path / "credentials.json").write_text(json.dumps(credentials))
        args += ["--credentials", str(tmp_path / "credentials.json")]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HF_", "PYTHON", "DJANGO"))}
    proc = subprocess.run(
        [sys.executable, str(image_tree / "launch_fetch.py"), *args],
        cwd=image_tree,
        env={**clean, "PYTHONPATH": str(image_tree), "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return Run(proc)


def secret_of(s3: S3Server) -> dict[str, str]:
    return {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key}


def test_a_model_is_fetched_verified_with_progress_lines_then_only_verified(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    manifest = manifest_of(tiny_model_dir)
    total = sum(e["size"] for e in manifest)
    run = fetch(image_tree, tmp_path, plan_for(s3, manifest), secret_of(s3))
    assert run.code == 0, run.stderr
    progress = [e for e in run.events if e["event"] == "progress"]
    assert progress and progress[-1]["bytes_done"] == progress[-1]["bytes_total"] == total
    done = run.last()
    assert done["event"] == "done" and done["downloaded_bytes"] == total
    assert sorted(done["fetched"]) == sorted(e["name"] for e in manifest)
    model = Path(done["path"])
    assert model == tmp_path / "cache" / "models" / manifest_hash(manifest)
    for entry in manifest:
        assert (model / entry["name"]).read_bytes() == (tiny_model_dir / entry["name"]).read_bytes()
    assert s3.secret_key not in run.stdout + run.stderr

    # Warm: only verified, nothing downloaded, and the source is never even contacted.
    again = fetch(image_tree, tmp_path, plan_for(s3, manifest, endpoint_url=f"http://127.0.0.1:{free_port()}"), {})
    assert again.code == 0, again.stderr
    assert again.last()["downloaded_bytes"] == 0
    assert not [e for e in again.events if e["event"] == "progress"]


def test_credentials_may_come_from_the_environment(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = fetch(
        image_tree,
        tmp_path,
        plan_for(s3, manifest_of(tiny_model_dir)),
        None,
        HANGAR_FETCH_CREDENTIALS=json.dumps(secret_of(s3)),
    )
    assert run.code == 0, run.stderr
    assert s3.secret_key not in run.stdout + run.stderr


def test_a_wrong_secret_is_refused_with_its_own_exit_code(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    wrong = {"access_key_id": s3.access_key, "secret_access_key": "not-the-secret-" + "x" * 24}
    run = fetch(image_tree, tmp_path, plan_for(s3, manifest_of(tiny_model_dir)), wrong)
    assert run.code == EXIT_DENIED
    assert run.last() == {"event": "error", "reason": "SourceAccessDenied", "message": "The secret key is wrong."}
    assert "not-the-secret" not in run.stdout + run.stderr
    assert "SourceAccessDenied: The secret key is wrong." in run.stderr


def test_a_missing_key_is_not_found(image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path) -> None:
    manifest = [*manifest_of(tiny_model_dir), {"name": "extra.safetensors", "size": 4, "sha256": "0" * 64}]
    run = fetch(image_tree, tmp_path, plan_for(s3, manifest), secret_of(s3))
    assert run.code == EXIT_NOT_FOUND
    assert run.last()["reason"] == "SourceNotFound"
    assert run.last()["message"] == "A file of the model is missing from the bucket."


def test_a_file_that_does_not_match_the_manifest_is_never_put_in_place(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    manifest = manifest_of(tiny_model_dir)
    changed = [dict(e, sha256="f" * 64) if e["name"] == "config.json" else e for e in manifest]
    run = fetch(image_tree, tmp_path, plan_for(s3, changed), secret_of(s3))
    assert run.code == EXIT_MISMATCH
    assert run.last()["reason"] == "ChecksumMismatch"
    assert "config.json does not match the manifest" in run.last()["message"]
    assert not (tmp_path / "cache" / "models" / manifest_hash(changed) / "config.json").exists()


def test_an_unreachable_source_is_temporary(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    run = fetch(image_tree, tmp_path, plan_for(s3, manifest_of(tiny_model_dir), endpoint_url=closed), secret_of(s3))
    assert run.code == EXIT_TEMPORARY
    assert run.last()["reason"] == "SourceUnreachable"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"content_hash": "0" * 64}, "does not match its content hash"),
        ({"source": "hf://org/model@main"}, "commit pinned at registration"),
        ({"source": "file:///etc"}, "Only s3:// and hf://"),
        ({"source": "s3://weights/../other"}, "source is refused"),
        ({"endpoint_url": "http://user:pw@s3.internal"}, "without user information"),
        ({"manifest": [{"name": "../../etc/cron.d/x", "size": 1, "sha256": "0" * 64}]}, "refused name"),
    ],
)
def test_a_bad_plan_is_refused_before_anything_is_read(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path, change: dict[str, Any], said: str
) -> None:
    plan = plan_for(s3, manifest_of(tiny_model_dir))
    if "manifest" in change:
        change = {**change, "content_hash": manifest_hash(change["manifest"])}
    run = fetch(image_tree, tmp_path, {**plan, **change}, secret_of(s3))
    assert run.code == EXIT_USAGE
    assert run.last()["reason"] == "BadPlan" and said in run.last()["message"]
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_unreadable_credentials_are_refused_without_repeating_them(
    image_tree: Path, s3: S3Server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    run = fetch(
        image_tree,
        tmp_path,
        plan_for(s3, manifest_of(tiny_model_dir)),
        None,
        HANGAR_FETCH_CREDENTIALS='{"secret_access_key": "hunter2-very-secret", "password": "x"}',
    )
    assert run.code == EXIT_USAGE and run.last()["reason"] == "BadCredentials"
    assert "hunter2" not in run.stdout + run.stderr


def test_a_hub_model_is_fetched_at_its_commit_with_the_token_though_the_image_runs_offline(
    image_tree: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    manifest = manifest_of(tiny_model_dir)
    with fake_hub(tiny_model_dir, token="hf_tenant_token_0123456789") as hub:
        plan = {
            "source": f"hf://{hub.repo}@{hub.commit}",
            "content_hash": manifest_hash(manifest),
            "manifest": manifest,
            "endpoint_url": hub.url,
        }
        denied = fetch(image_tree, tmp_path / "denied", plan, {"token": "hf_wrong"})
        run = fetch(image_tree, tmp_path / "ok", plan, {"token": "hf_tenant_token_0123456789"})
    assert denied.code in (EXIT_DENIED, EXIT_NOT_FOUND), denied.stderr
    assert "hf_wrong" not in denied.stdout + denied.stderr
    assert run.code == 0, run.stderr  # HF_HUB_OFFLINE=1, as the image sets it, does not stop the fetch
    assert run.last()["downloaded_bytes"] == sum(e["size"] for e in manifest)
    fetched = [p for p in hub.hits if "/resolve/" in p]
    assert fetched and all(f"/resolve/{hub.commit}/" in p for p in fetched)
    assert not [p for p in hub.hits if p.startswith("/api/")]  # the commit is pinned: no lookup needed
    assert "hf_tenant_token" not in run.stdout + run.stderr
