"""End to end: the shipped production stack, ``deploy/compose.yaml``, on this machine's dockerd.

Runs ``deploy/dev/compose-smoke.sh`` as a user would: it builds the images (a checksum when
nothing changed: ``deploy/images/build`` skips images whose inputs are unchanged), brings up
PostgreSQL, Redis, migrate, web, worker and beat with production settings, provisions a tenant,
a docker target granted to it, the tiny model, a deployment and an API key through the REST API
as a platform admin, and asks the gateway for a chat completion. The stack gets a project name,
replica label and loopback ports of its own, so parallel sessions don't collide.

Needs a real Docker daemon and docker-compose (``deploy/dev/install-deps.sh``,
``deploy/dev/services.sh start``); without them the test fails with instructions instead of
skipping. ``HANGAR_SKIP_DOCKER=1`` skips it deliberately. Figures are printed and written to
``artifacts/e2e/compose_stack.json``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_ports
from tests.support.processes import Process

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE = REPO_ROOT / "deploy" / "dev" / "compose-smoke.sh"
COMPOSE_FILE = REPO_ROOT / "deploy" / "compose.yaml"
ARTIFACT = REPO_ROOT / "artifacts" / "e2e" / "compose_stack.json"

SMOKE_TIMEOUT_S = 1800  # a cold machine builds all four images first (debootstrap, wheels)
WAIT_TIMEOUT_S = 240  # each wait inside the smoke: the stack ready, the replica answering
TERM_GRACE_S = 60  # after SIGTERM the smoke tears the stack down itself

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(SMOKE_TIMEOUT_S + 300)]


def _docker_cli() -> str:
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")


def _compose_cli() -> list[str] | None:
    docker = _docker_cli()
    if subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    compose = shutil.which("docker-compose")
    return [compose] if compose else None


def _leftovers(project: str) -> dict[str, list[str]]:
    """Containers and volumes of the project, and replicas carrying its instance label."""
    docker = _docker_cli()

    def lines(*args: str) -> list[str]:
        proc = subprocess.run([docker, *args], capture_output=True, text=True, check=True)
        return proc.stdout.split()

    return {
        "compose containers": lines("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"),
        "compose volumes": lines("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"),
        "replicas": lines("ps", "-aq", "--filter", f"label=hangar.instance={project}"),
    }


def _tear_down(compose: list[str], project: str, env: dict[str, str]) -> None:
    """What the smoke's own cleanup does, for when it could not run (killed, timed out)."""
    subprocess.run(
        [*compose, "-p", project, "-f", str(COMPOSE_FILE), "down", "-v", "--remove-orphans"],
        env=env,
        capture_output=True,
        check=False,
        timeout=300,
    )
    replicas = _leftovers(project)["replicas"]
    if replicas:
        subprocess.run([_docker_cli(), "rm", "-f", *replicas], capture_output=True, check=False)
    shutil.rmtree(REPO_ROOT / "var" / "compose-smoke" / project, ignore_errors=True)


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    """The smoke's environment: a project, replica label and ports of this session's own."""
    if os.environ.get("HANGAR_SKIP_DOCKER") == "1":
        pytest.skip("HANGAR_SKIP_DOCKER=1")
    docker = _docker_cli()
    if subprocess.run([docker, "info"], capture_output=True, check=False).returncode != 0:
        pytest.fail(
            "Docker daemon not reachable. Run `deploy/dev/services.sh start`, or set "
            "HANGAR_SKIP_DOCKER=1 to skip the Docker end-to-end tests.",
            pytrace=False,
        )
    compose = _compose_cli()
    if compose is None:
        pytest.fail(
            "Neither `docker compose` nor docker-compose found: run deploy/dev/install-deps.sh "
            "(Debian's docker-compose 1.29), or set HANGAR_SKIP_DOCKER=1.",
            pytrace=False,
        )
    project = f"hangar-smoke-{secrets.token_hex(4)}"
    web, pg, redis = free_ports(3)
    # Only what the stack needs: the session's own settings (DATABASE_URL, HANGAR_* of the test
    # settings) must not leak into the compose file's interpolation.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "DOCKER_HOST") if name in os.environ}
    env |= {
        "HANGAR_SMOKE_PROJECT": project,
        "HANGAR_PORT": str(web),
        "HANGAR_PG_PORT": str(pg),
        "HANGAR_REDIS_PORT": str(redis),
        "HANGAR_SMOKE_TIMEOUT": str(WAIT_TIMEOUT_S),
    }
    yield env
    # Always, even when the smoke cleaned up after itself: a no-op then.
    cleanup_env = env | {
        "POSTGRES_PASSWORD": "x",
        "REDIS_PASSWORD": "x",
        "HANGAR_SECRET_KEY": "x",
        "HANGAR_KEY_PEPPER": "x",
        "HANGAR_ENCRYPTION_KEYS": "x",
        "DOCKER_GID": "0",
    }
    _tear_down(compose, project, cleanup_env)


def _run_smoke(env: dict[str, str]) -> tuple[int, str, str]:
    """Run the smoke in its own process group; on timeout, SIGTERM lets it tear the stack down."""
    smoke = Process("compose-smoke", [str(SMOKE)], env=env)
    smoke.out_path = smoke.log_path.with_suffix(".out")
    smoke.start()
    try:
        code = smoke.wait(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        smoke.stop(grace=TERM_GRACE_S)
        pytest.fail(f"compose smoke did not finish within {SMOKE_TIMEOUT_S} s:\n{smoke.tail(8000)}")
    return code, smoke.out_path.read_text(errors="replace"), smoke.log()


def test_compose_stack_serves_the_tiny_model_through_the_gateway(stack_env: dict[str, str]) -> None:
    project = stack_env["HANGAR_SMOKE_PROJECT"]
    started = time.monotonic()
    rc, out, err = _run_smoke(stack_env)
    elapsed = time.monotonic() - started
    progress = [line for line in err.splitlines() if line.startswith(("[smoke", "[build"))]
    print("\n".join(progress))
    assert rc == 0, f"compose smoke failed ({rc}):\n{err[-12000:]}"

    result: dict[str, Any] = json.loads(out)
    answer = result["answer"]
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "tiny-llama"
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in {"stop", "length"}
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0 and 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The replica that answered was started by the stack's worker, from the runtime image.
    assert len(result["replicas"]) == 1 and " hangar-runtime:" in result["replicas"][0], result["replicas"]

    # The smoke removed everything it started: compose containers, volumes, replicas.
    assert _leftovers(project) == {"compose containers": [], "compose volumes": [], "replicas": []}

    figures = {f"{name}_s": value for name, value in result["seconds"].items()} | {"test_s": round(elapsed, 1)}
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    for name, value in figures.items():
        print(f"[compose-stack] {name} = {value}")
