"""The runtime's bearer credential: every path but /health needs it, tried the way a caller
that reached the replica's port directly would try (no header, another scheme, a wrong or
truncated token, the right token in the wrong place)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.workers.runtime.conftest import REPO_ROOT, RuntimeServer, start_server
from workers.runtime.auth import TOKEN_ENV, TokenError, load_token
from workers.runtime.server import Runtime, ServerConfig, create_app

TOKEN = "f3Yl0p8dJk2vQb6wXr1TzN9sHc4mAe7uGi5oLy0aBcD"


def client(token: str | None) -> httpx.AsyncClient:
    """The real ASGI app (no model loaded: handlers answer 503 'loading' once past the check)."""
    app = create_app(Runtime(ServerConfig(model_dir=Path("/nonexistent"), served_model_name="m", token=token)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica")


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN.lower()}"},
        {"Authorization": "Bearer hgr_someonesapikey_0123456789"},
        {"X-Api-Key": TOKEN},
        {"Cookie": f"token={TOKEN}"},
    ],
)
async def test_api_and_metrics_refuse_anything_but_the_token(headers: dict[str, str]) -> None:
    async with client(TOKEN) as c:
        answers = [
            await c.post("/v1/chat/completions", json=CHAT, headers=headers),
            await c.post("/v1/completions", json={"model": "m", "prompt": "hi"}, headers=headers),
            await c.get("/v1/models", headers=headers),
            await c.get("/metrics", headers=headers),
            await c.get("/v1/unknown", headers=headers),
            await c.get("/health/../metrics", headers=headers),
        ]
    for answer in answers:
        assert answer.status_code == 401, (answer.request.url, answer.text)
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}  # OpenAI's shape
        assert error["type"] == "invalid_request_error"
        assert error["code"] in {"missing_credential", "invalid_credential"}
        assert TOKEN not in answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_the_token_opens_the_api_and_health_needs_none() -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with client(TOKEN) as c:
        assert (await c.get("/metrics", headers=good)).status_code == 200
        assert (await c.get("/v1/models", headers=good)).status_code == 200
        assert (await c.get("/metrics", headers={"Authorization": f"bearer   {TOKEN}"})).status_code == 200
        # Past the check: the handler itself answers (the model is still loading).
        chat = await c.post("/v1/chat/completions", json=CHAT, headers=good)
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "loading"
        health = await c.get("/health")
        assert health.status_code == 503 and health.json() == {"status": "loading"}


async def test_without_a_token_the_runtime_is_open() -> None:
    async with client(None) as c:
        assert (await c.get("/metrics")).status_code == 200
        assert (await c.get("/v1/models")).status_code == 200


def test_load_token_from_file_or_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    assert load_token(path, {TOKEN_ENV: "from-env"}) == TOKEN  # the file wins
    assert load_token(None, {TOKEN_ENV: "from-env"}) == "from-env"
    assert load_token(None, {TOKEN_ENV: ""}) is None
    assert load_token(None, {}) is None


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_token_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(mode)
    with pytest.raises(TokenError, match="chmod 600"):
        load_token(path, {})


def test_missing_empty_and_odd_token_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read"):
        load_token(tmp_path / "absent", {})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(TokenError, match="empty"):
        load_token(empty, {})
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(TokenError):
        load_token(directory, {})


def test_cli_refuses_a_readable_token_file_before_loading_anything(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "workers.runtime", "--model", str(tmp_path), "--port", "1", "--token-file", str(path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, TOKEN_ENV: ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert "chmod 600" in proc.stderr


@pytest.mark.slow
def test_a_real_runtime_with_a_token_file(runtime_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o600)
    server: RuntimeServer = start_server(runtime_model_dir, tmp_path, "--token-file", str(path))
    try:
        server.wait_ready()  # /health is open
        chat = {"model": server.model_name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        url = server.api_url + "/chat/completions"
        assert httpx.post(url, json=chat, timeout=60).status_code == 401
        assert httpx.get(server.base_url + "/metrics", timeout=5).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(url, json=chat, headers=good, timeout=60).status_code == 200
        assert httpx.get(server.base_url + "/metrics", headers=good, timeout=5).status_code == 200
        assert "auth=bearer" in server.log()
        assert TOKEN not in server.log()
        assert TOKEN.encode() not in Path(f"/proc/{server.pid}/environ").read_bytes()
    finally:
        server.stop()


def test_the_shared_standalone_runtime_is_open_and_says_so(runtime_server: RuntimeServer) -> None:
    # Started by hand, without a token: it serves everyone and warns about it.
    assert httpx.get(runtime_server.base_url + "/metrics", timeout=5).status_code == 200
    assert "warning: no token configured" in runtime_server.log()
