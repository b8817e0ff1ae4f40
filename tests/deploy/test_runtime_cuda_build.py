"""``deploy/images/build runtime-cuda``: the GPU image's build is wired and checks its wheelhouse.

The real build needs ~6 GB of CUDA wheels, which cannot be downloaded here, so these tests drive
the script's ``--dry-run`` (it checks the inputs and prints the plan, and neither downloads nor
builds) and its refusals of wheelhouses that would make an image that never sees a GPU.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

BUILD = REPO_ROOT / "deploy" / "images" / "build"
TORCH_CUDA = "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"
TORCH_CPU = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
NVIDIA = "nvidia_cublas-13.0.0-py3-none-manylinux_2_27_x86_64.whl"


def build(*args: str, wheels: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HANGAR_CUDA_WHEELS"}
    if wheels is not None:
        env["HANGAR_CUDA_WHEELS"] = str(wheels)
    return subprocess.run([str(BUILD), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def wheelhouse(tmp_path: Path, *names: str) -> Path:
    for name in names:
        (tmp_path / name).write_bytes(b"")  # the dry run checks names only; nothing is installed
    return tmp_path


def test_help_documents_the_target_and_the_wheelhouse() -> None:
    out = build("--help")
    assert out.returncode == 0
    assert "runtime-cuda" in out.stdout and "HANGAR_CUDA_WHEELS" in out.stdout and "--dry-run" in out.stdout


def test_dry_run_without_a_wheelhouse_plans_a_download() -> None:
    out = build("--dry-run", "runtime-cuda")
    assert out.returncode == 0, out.stderr
    assert "deploy/runtime/Dockerfile.cuda" in out.stdout
    assert "hangar-runtime-cuda:latest" in out.stdout and "hangar-base:bookworm" in out.stdout
    assert "pip download -r deploy/runtime/requirements-cuda.txt" in out.stdout


def test_dry_run_with_a_cuda_wheelhouse_installs_from_it(tmp_path: Path) -> None:
    wheels = wheelhouse(tmp_path, TORCH_CUDA, NVIDIA)
    out = build("--dry-run", "runtime-cuda", wheels=wheels)
    assert out.returncode == 0, out.stderr
    assert f"{wheels} (host wheelhouse, pip install --no-index)" in out.stdout
    assert TORCH_CUDA in out.stderr  # the log names the torch it found


@pytest.mark.parametrize(
    ("names", "complaint"),
    [
        ((), "no CUDA torch 2.13.0 wheel"),
        ((TORCH_CPU, NVIDIA), "no CUDA torch 2.13.0 wheel"),  # the CPU build never sees a GPU
        ((TORCH_CUDA,), "no nvidia-* wheels"),
    ],
)
def test_a_wheelhouse_without_cuda_torch_is_refused(tmp_path: Path, names: tuple[str, ...], complaint: str) -> None:
    out = build("--dry-run", "runtime-cuda", wheels=wheelhouse(tmp_path, *names))
    assert out.returncode == 1
    assert complaint in out.stderr


def test_the_dockerfile_gets_the_context_the_script_prepares() -> None:
    dockerfile = (REPO_ROOT / "deploy" / "runtime" / "Dockerfile.cuda").read_text()
    for source in ("requirements.txt", "wheels/", "workers/__init__.py", "workers/runtime/"):
        assert f"COPY {source}" in dockerfile
    assert "--no-index" in dockerfile and "ARG BASE_IMAGE" in dockerfile
    assert 'io.hangar.runtime.accelerator="cuda"' in dockerfile
    # The build script passes the offline base; the Dockerfile must not hard-wire a python path.
    assert "python3.12/" not in dockerfile
