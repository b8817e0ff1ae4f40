"""Fixtures for the model runtime: the tiny model and real server subprocesses.

Servers are started exactly as replicas are (``python -m workers.runtime ...``) on a free
127.0.0.1 port; readiness is awaited by polling ``/health``, never by sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from workers.runtime.tinymodel import build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.05

_METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})? (?P<value>\S+)$")


def free_port() -> int:
    """A port that was free a moment ago (the server binds it right after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels kept verbatim)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC_LINE.match(line)
        if match:
            values[match["name"] + (match["labels"] or "")] = float(match["value"])
    return values


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Call ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


@dataclass
class RuntimeServer:
    """A ``python -m workers.runtime`` subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    model_name: str
    health_codes: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stages(self) -> list[str]:
        return re.findall(r"^hangar-runtime: stage=(\S+)", self.log(), flags=re.M)

    def health(self) -> int | None:
        try:
            return httpx.get(self.base_url + "/health", timeout=2.0).status_code
        except httpx.TransportError:
            return None

    def metrics(self) -> dict[str, float]:
        return parse_metrics(httpx.get(self.base_url + "/metrics", timeout=5.0).text)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            code = self.health()
            if code is not None:
                self.health_codes.append(code)
            return code == 200

        poll(ready, timeout, "/health to answer 200")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(model_dir: Path, log_dir: Path, *args: str, name: str = "tiny") -> RuntimeServer:
    """Start a runtime subprocess (not waiting for readiness)."""
    port = free_port()
    log_path = log_dir / f"runtime-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "workers.runtime", "--model", str(model_dir), "--port", str(port)]
    cmd += ["--served-model-name", name, *args]
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    return RuntimeServer(proc=proc, port=port, log_path=log_path, model_name=name)


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
