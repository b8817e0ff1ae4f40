"""Replica lifecycle: stage lines, health before readiness, queue limit, SIGTERM drain, refusals."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.waiting import wait_for
from tests.workers.runtime.conftest import RuntimeServer, start_server


def test_health_is_503_until_loaded_then_stages_are_logged(runtime_model_dir: Path, tmp_path: Path) -> None:
    server = start_server(runtime_model_dir, tmp_path)
    try:
        server.wait_ready()
        # The HTTP server answers long before torch and the model are loaded.
        answered = [c for c in server.health_codes if c is not None]
        assert answered[0] == 503
        assert answered[-1] == 200
        assert set(answered) <= {200, 503}
        assert server.stages() == ["starting", "loading_model", "loaded", "warming_up", "ready"]
        assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    finally:
        assert server.stop() == 0
    assert server.stages()[-3:] == ["draining", "drained", "stopped"]


def test_queue_full_is_503_with_retry_after_and_sigterm_drains(runtime_model_dir: Path, tmp_path: Path) -> None:
    server = start_server(runtime_model_dir, tmp_path, "--max-batch-size", "1", "--max-queue", "1")
    server.wait_ready()
    body = {"model": "tiny", "prompt": "Drain me", "max_tokens": 300, "stream": True, "ignore_eos": True}
    results: dict[str, list[str]] = {}
    first_event = {"running": threading.Event(), "queued": threading.Event()}

    def stream(name: str) -> None:
        lines: list[str] = []
        with httpx.stream("POST", server.api_url + "/completions", json=body, timeout=60) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    lines.append(line[6:])
                    first_event[name].set()
        results[name] = lines

    running = threading.Thread(target=stream, args=("running",))
    running.start()
    assert first_event["running"].wait(30)
    queued = threading.Thread(target=stream, args=("queued",))
    queued.start()
    wait_for(lambda: server.metrics()["hangar_runtime_queue_depth"] == 1, 20, "the second request to queue")

    # One running, one waiting: the third is refused with 503 and Retry-After.
    resp = httpx.post(server.api_url + "/completions", json={**body, "stream": False})
    assert resp.status_code == 503
    assert resp.headers["retry-after"]
    assert resp.json()["error"]["code"] == "queue_full"

    server.signal(signal.SIGTERM, group=False)
    wait_for(lambda: server.health() == 503, 10, "health to turn 503 while draining")
    assert httpx.get(server.base_url + "/health").json() == {"status": "draining"}
    refused = httpx.post(server.api_url + "/completions", json={"model": "tiny", "prompt": "late", "max_tokens": 2})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"

    running.join(60)
    queued.join(60)
    assert server.wait(timeout=30) == 0
    for name in ("running", "queued"):
        events = results[name]
        assert events[-1] == "[DONE]", name
        final = json.loads(events[-2])
        assert final["choices"][0]["finish_reason"] == "length", name
    assert server.stages()[-3:] == ["draining", "drained", "stopped"]


def test_pickle_only_model_is_refused(runtime_model_dir: Path, tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe-model"
    unsafe.mkdir()
    for f in runtime_model_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, unsafe / f.name)
    (unsafe / "pytorch_model.bin").write_bytes(b"not really a pickle")
    server = start_server(unsafe, tmp_path)
    try:
        code = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail("server did not exit")
    assert code == 1
    assert "failed" in server.stages()
    assert "--allow-unsafe-weights" in server.log()
    assert "pytorch_model.bin" in server.log()


def test_int8_server_serves(runtime_model_dir: Path, tmp_path: Path) -> None:
    server: RuntimeServer = start_server(runtime_model_dir, tmp_path, "--quantization", "int8")
    try:
        server.wait_ready()
        resp = httpx.post(
            server.api_url + "/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            timeout=30,
        )
        assert resp.status_code == 200
        assert resp.json()["usage"]["completion_tokens"] >= 1
    finally:
        assert server.stop() == 0


def test_sigterm_while_loading_exits_cleanly_without_becoming_ready(runtime_model_dir: Path, tmp_path: Path) -> None:
    server = start_server(runtime_model_dir, tmp_path)
    try:
        # HTTP answers within a fraction of a second; loading torch and the model takes longer.
        wait_for(lambda: server.health() == 503, 60, "the HTTP server to answer while loading")
        server.signal(signal.SIGTERM, group=False)
        assert server.wait(timeout=60) == 0
    finally:
        server.stop()
    stages = server.stages()
    assert "ready" not in stages
    assert stages.index("draining") < stages.index("drained") < stages.index("stopped")
    assert stages[-1] == "stopped"
