"""The local driver with real subprocesses: start, list by labels, health, logs, remove, errors."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import listening_socket
from tests.support.waiting import wait_for
from workers.drivers.base import BackendState, PermanentDriverError, ReplicaSpec, health_ok
from workers.drivers.local import LocalDriver

FAKE = "tests.workers.fake_runtime"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LocalDriver]:
    drv = LocalDriver(state_dir=tmp_path / "replicas", instance="test", runtime_module=FAKE)
    yield drv
    for replica in drv.list():
        drv.remove(replica.backend_id)


def spec(model: Path, *, name: str = "chat-g1-0", slot: int = 0, deployment_id: int = 7, **kw: Any) -> ReplicaSpec:
    return ReplicaSpec(
        instance="test",
        tenant_id=1,
        deployment_id=deployment_id,
        deployment_name="chat",
        name=name,
        slot=slot,
        generation=1,
        model_path=str(model),
        served_model_name="chat",
        **kw,
    )


def test_create_list_health_logs_remove(driver: LocalDriver, model_dir: Path) -> None:
    created = driver.create(spec(model_dir))
    assert created.endpoint.startswith("http://127.0.0.1:")
    wait_for(lambda: health_ok(created.endpoint), 20, "replica healthy", interval=0.05)

    [listed] = driver.list(7)
    assert listed.name == "chat-g1-0" and listed.generation == 1 and listed.state == BackendState.RUNNING
    assert listed.labels["hangar.deployment"] == "7"
    assert driver.list(8) == []
    assert "stage=ready" in wait_for(
        lambda: driver.logs(created.backend_id) if "ready" in driver.logs(created.backend_id) else "",
        20,
        "stage=ready in the replica's log",
        interval=0.05,
    )
    assert driver.stage(created.backend_id).step == "ready"

    driver.remove(created.backend_id)
    assert driver.list(7) == []
    assert not health_ok(created.endpoint)
    driver.remove(created.backend_id)  # removing twice is fine


def test_a_killed_replica_is_listed_as_exited(driver: LocalDriver, model_dir: Path) -> None:
    created = driver.create(spec(model_dir))
    state = driver._read_state(driver._state_path(created.backend_id))
    os.kill(state["pid"], signal.SIGKILL)
    wait_for(lambda: driver.list(7)[0].state == BackendState.EXITED, 20, "replica listed as exited", interval=0.05)


def test_a_recycled_pid_is_not_mistaken_for_the_replica(driver: LocalDriver, model_dir: Path) -> None:
    created = driver.create(spec(model_dir))
    path = driver._state_path(created.backend_id)
    state = driver._read_state(path)
    real_ticks = state["start_ticks"]
    state["start_ticks"] = real_ticks - 1  # same pid, another process
    path.write_text(json.dumps(state))
    try:
        assert driver.list(7)[0].state == BackendState.EXITED
    finally:
        path.write_text(json.dumps({**state, "start_ticks": real_ticks}))


def test_missing_model_path_is_permanent(driver: LocalDriver, tmp_path: Path) -> None:
    with pytest.raises(PermanentDriverError) as info:
        driver.create(spec(tmp_path / "nowhere"))
    assert info.value.reason == "ModelPathMissing"
    assert "nowhere" in info.value.message


def test_port_clash_is_permanent(driver: LocalDriver, model_dir: Path) -> None:
    with listening_socket() as busy:
        port = busy.getsockname()[1]
        with pytest.raises(PermanentDriverError) as info:
            driver.create(spec(model_dir, host_port=port))
    assert info.value.reason == "PortClash"
    assert str(port) in info.value.message


def test_state_survives_a_new_driver_instance(driver: LocalDriver, model_dir: Path, tmp_path: Path) -> None:
    created = driver.create(spec(model_dir))
    fresh = LocalDriver(state_dir=tmp_path / "replicas", instance="test", runtime_module=FAKE)
    assert [r.backend_id for r in fresh.list()] == [created.backend_id]
    other_instance = LocalDriver(state_dir=tmp_path / "replicas", instance="other", runtime_module=FAKE)
    assert other_instance.list() == []


def test_a_replica_without_state_file_is_found_as_a_stray(driver: LocalDriver, model_dir: Path) -> None:
    created = driver.create(spec(model_dir))
    state = driver._read_state(driver._state_path(created.backend_id))
    driver._state_path(created.backend_id).unlink()  # the worker died before writing it
    assert driver.list(7) == []
    assert driver.strays() == []  # too young: its creator may still be writing the file
    assert driver.strays(min_age_s=0) == [state["pid"]]
    other = LocalDriver(state_dir=driver.root.parent, instance="other", runtime_module=FAKE)
    assert other.strays(min_age_s=0) == []  # another installation's processes are not ours
    driver._stop(state["pid"], state["start_ticks"])
    assert driver.strays(min_age_s=0) == []


def test_a_replica_inherits_no_secrets_and_reads_its_token_from_a_private_file(
    driver: LocalDriver, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaks = {
        "HANGAR_SECRET_KEY": "leak-secret-key",
        "HANGAR_KEY_PEPPER": "leak-pepper",
        "HANGAR_ENCRYPTION_KEYS": "leak-fernet-key",
        "DATABASE_URL": "postgres://hangar:leak-db-password@db/hangar",
        "REDIS_URL": "redis://:leak-redis-password@redis/0",
        "CELERY_BROKER_URL": "redis://:leak-broker-password@redis/1",
        "DJANGO_SETTINGS_MODULE": "leak.settings",
        "AWS_SECRET_ACCESS_KEY": "leak-aws",
        "HANGAR_RUNTIME_TOKEN": "leak-a-token-the-worker-happens-to-hold",
        "HANGAR_RUNTIME_API_KEY": "leak-even-under-the-runtime-prefix",
    }
    for name, value in leaks.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HANGAR_RUNTIME_FAKE_READY_DELAY", "0.05")
    token = "the-deployments-replica-token"
    created = driver.create(spec(model_dir, token=token))
    wait_for(lambda: health_ok(created.endpoint), 20, "replica healthy", interval=0.05)
    state = driver._read_state(driver._state_path(created.backend_id))

    raw = Path(f"/proc/{state['pid']}/environ").read_bytes()
    environ = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)
    assert not [value for value in leaks.values() if value.encode() in raw]
    assert token.encode() not in raw
    assert environ["HANGAR_RUNTIME_FAKE_READY_DELAY"] == "0.05"  # the runtime's own settings pass
    assert environ["HF_HUB_OFFLINE"] == environ["TRANSFORMERS_OFFLINE"] == "1"
    assert environ["PATH"] == os.environ["PATH"]

    token_path = driver._token_path(created.backend_id)
    assert token_path.read_text() == token
    assert token_path.stat().st_mode & 0o777 == 0o600
    cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes().split(b"\0")
    assert str(token_path).encode() in cmdline and token.encode() not in b" ".join(cmdline)

    assert httpx.get(created.endpoint + "/v1/models").status_code == 401
    assert httpx.get(created.endpoint + "/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 404

    driver.remove(created.backend_id)
    assert not token_path.exists()
