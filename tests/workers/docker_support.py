"""What the tests against the real Docker daemon share: reaching it, the runtime image, cleanup.

Docker tests run whenever a daemon answers and fail, not skip, when none does (set
``HANGAR_SKIP_DOCKER=1`` to skip deliberately). Every container they make carries
``hangar.instance=test_<db>`` and is removed by ``remove_test_containers``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.workers.processes import REPO_ROOT
from workers.drivers.base import LABEL_INSTANCE
from workers.drivers.docker_models import FETCH_LABEL

DOCKER_URL = "unix:///var/run/docker.sock"


def docker_or_fail() -> Any:
    """A docker-py client of the local daemon, or the test fails saying how to start one."""
    if os.environ.get("HANGAR_SKIP_DOCKER") == "1":
        pytest.skip("HANGAR_SKIP_DOCKER=1")
    import docker

    try:
        client = docker.DockerClient(base_url=DOCKER_URL, version="auto")
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"Docker daemon not reachable ({exc}). Run `deploy/dev/services.sh start`, "
            "or set HANGAR_SKIP_DOCKER=1 to skip the Docker tests.",
            pytrace=False,
        )
    return client


def _test_instance() -> str:
    """What instance_name() answers once the test database is set up (this may run before or after)."""
    from django.db import connection

    current = str(connection.settings_dict["NAME"])
    name = settings.HANGAR_INSTANCE or (
        current if current.startswith("test_") else connection.creation._get_test_db_name()
    )
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63]


def remove_test_containers(client: Any) -> None:
    """Remove this session's containers only: another test session (another checkout, another
    database) may be using the same daemon right now, and its containers are not ours."""
    instance = _test_instance()
    if not instance.startswith("test_"):
        return  # never a development or production installation's containers
    for container in client.containers.list(
        all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"}, ignore_removed=True
    ):
        container.remove(force=True)


def ensure_runtime_image(client: Any) -> str:
    """The runtime image; built with deploy/images/build when absent or older than the model fetch
    command (cached between runs)."""
    import docker.errors

    image = settings.HANGAR_RUNTIME_IMAGE
    try:
        current = bool((client.images.get(image).labels or {}).get(FETCH_LABEL))
    except docker.errors.ImageNotFound:
        current = False
    if not current:
        proc = subprocess.run(
            [str(REPO_ROOT / "deploy" / "images" / "build")], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert (client.images.get(image).labels or {}).get(FETCH_LABEL), f"{image} was built without the fetch command"
    return image


def remove_test_volumes(client: Any) -> None:
    """Remove this session's model volumes (after its containers: Docker keeps a volume in use)."""
    instance = _test_instance()
    if not instance.startswith("test_"):
        return
    for volume in client.volumes.list(filters={"label": f"{LABEL_INSTANCE}={instance}"}):
        volume.remove(force=True)


def readable_by_containers(model_dir: Path) -> Path:
    """``model_dir`` made readable by the image's unprivileged user (uid 10001)."""
    for path in [model_dir, *model_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return model_dir
