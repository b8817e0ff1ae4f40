"""The shipped Redis (deploy/images/redis/entrypoint.sh, the CMD of hangar-redis and of the Helm
chart's bundled Redis) requires a password: it refuses to start without one, and once started
the unauthenticated default user can only PING (the health checks) while the ``hangar`` ACL user
with the password, as ``REDIS_URL`` names it, can do everything.

The entrypoint is run here with this machine's redis-server, the same Debian Redis 7 the image
installs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import REPO_ROOT
from tests.support.ports import free_port
from tests.support.processes import Process

ENTRYPOINT = REPO_ROOT / "deploy" / "images" / "redis" / "entrypoint.sh"
PASSWORD = "Redis-acl-test-password-0123456789"


def answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def acl_redis(tmp_path) -> Iterator[int]:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "REDIS_PASSWORD": PASSWORD, "REDIS_PORT": str(port)}
    env |= {"REDIS_BIND": "127.0.0.1", "TMPDIR": str(tmp_path)}
    server = Process(f"redis-acl-{port}", ["sh", str(ENTRYPOINT)], env=env, log_path=tmp_path / "redis.log").start()
    try:
        server.wait_ready(lambda: answers(port), 15, "PONG without a password")
        yield port
    finally:
        server.stop()


def test_redis_without_password_can_only_ping(acl_redis: int) -> None:
    anonymous = redis.Redis(port=acl_redis)
    assert anonymous.ping()
    for command in (("SET", "k", "v"), ("GET", "k"), ("KEYS", "*"), ("CONFIG", "GET", "*"), ("EVAL", "return 1", 0)):
        with pytest.raises(redis.exceptions.NoPermissionError):
            anonymous.execute_command(*command)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(f"redis://hangar:wrong-password@127.0.0.1:{acl_redis}/0").set("k", "v")
    client = redis.Redis.from_url(f"redis://hangar:{PASSWORD}@127.0.0.1:{acl_redis}/0")
    assert client.set("k", "v") and client.get("k") == b"v"
    assert client.eval("return 1", 0) == 1  # the gateway's limiter runs Lua
    anonymous.close()
    client.close()


@pytest.mark.parametrize("password", [None, "", "short", "has space and more than 16", "quote'injection-1234567"])
def test_redis_refuses_to_start_without_a_sound_password(password: str | None, tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "REDIS_PORT": str(free_port()), "TMPDIR": str(tmp_path)}
    if password is not None:
        env["REDIS_PASSWORD"] = password
    result = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 64, result.stderr
    assert "REDIS_PASSWORD" in result.stderr
    assert not list(tmp_path.iterdir())  # no config file written, nothing started
