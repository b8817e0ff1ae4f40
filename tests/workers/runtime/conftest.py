"""Fixtures for the model runtime: the tiny model and real server subprocesses.

Servers are started exactly as replicas are (``python -m workers.runtime ...``) on a free
127.0.0.1 port; readiness is awaited by polling ``/health``, never by sleeping.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import REPO_ROOT, Process
from workers.runtime.tinymodel import build_tiny_model

STARTUP_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.05

_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels kept verbatim)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match:
            values[match["name"] + (match["labels"] or "")] = float(match["value"])
    return values


class RuntimeServer(Process):
    """A ``python -m workers.runtime`` subprocess on the tests' process harness."""

    def __init__(self, model_dir: Path, log_dir: Path, *args: str, name: str = "tiny") -> None:
        self.port = free_port()
        self.model_name = name
        self.health_codes: list[int] = []
        cmd = [sys.executable, "-m", "workers.runtime", "--model", str(model_dir), "--port", str(self.port)]
        cmd += ["--served-model-name", name, *args]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        super().__init__(f"runtime-{self.port}", cmd, log_path=log_dir / f"runtime-{self.port}.log", env=env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def stages(self) -> list[str]:
        return re.findall(r"^hangar-runtime: stage=(\S+)", self.log(), flags=re.M)

    def health(self) -> int | None:
        try:
            return httpx.get(self.base_url + "/health", timeout=2.0).status_code
        except httpx.TransportError:
            return None

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(self.base_url + "/metrics", timeout=5.0).text)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:  # type: ignore[override]
        def ready() -> bool:
            code = self.health()
            if code is not None:
                self.health_codes.append(code)
            return code == 200

        super().wait_ready(ready, timeout, "/health to answer 200", interval=POLL_INTERVAL_S)

    def stop(self, grace: float = 30.0) -> int:
        return super().stop(grace)


def start_server(model_dir: Path, log_dir: Path, *args: str, name: str = "tiny") -> RuntimeServer:
    """Start a runtime subprocess (not waiting for readiness)."""
    server = RuntimeServer(model_dir, log_dir, *args, name=name)
    server.start()
    return server


@pytest.fixture(scope="session")
def runtime_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama model, built once per session into a temporary directory."""
    return build_tiny_model(tmp_path_factory.mktemp("runtime-models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def runtime_server(runtime_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """One shared, ready runtime server for the API tests."""
    server = start_server(runtime_model_dir, tmp_path_factory.mktemp("runtime-logs"), "--max-batch-size", "32")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reference_model(runtime_model_dir: Path) -> tuple[object, object]:
    """The same model loaded in-process with plain transformers, for equivalence checks."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(runtime_model_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(runtime_model_dir), local_files_only=True).eval()
    return model, tokenizer
