"""Docker driver details that need no daemon: the container it asks for (GPUs, limits, mounts, labels)."""

from __future__ import annotations

from typing import Any

import pytest
from docker.types import DeviceRequest, Mount

from workers.drivers.base import ReplicaSpec
from workers.drivers.docker import DockerDriver


class RecordingContainers:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create(self, image: str, **kwargs: Any) -> Any:
        self.created.append({"image": image, **kwargs})
        return FakeContainer(kwargs["labels"])


class FakeContainer:
    id = "c0ffee"
    name = "hangar-x"
    status = "running"

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.attrs = {
            "State": {"Status": "running", "StartedAt": "2026-11-23T10:00:00.123456789Z"},
            "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}},
        }

    def start(self) -> None:
        pass

    def reload(self) -> None:
        pass


class FakeClient:
    def __init__(self) -> None:
        self.containers = RecordingContainers()
        self.images = self

    def get(self, ref: str) -> object:
        return object()

    def close(self) -> None:
        pass


def make(publish_host: str = "127.0.0.1", **overrides: Any) -> tuple[DockerDriver, FakeClient, ReplicaSpec]:
    driver = DockerDriver(
        url="unix:///var/run/docker.sock", image="hangar-runtime:latest", instance="t", publish_host=publish_host
    )
    client = FakeClient()
    driver._client = client  # type: ignore[assignment]
    spec = ReplicaSpec(
        instance="t",
        tenant_id=1,
        deployment_id=5,
        deployment_name="chat",
        name="chat-g1-0",
        slot=0,
        generation=1,
        model_path="/srv/models/tiny",
        served_model_name="tiny",
        **overrides,
    )
    return driver, client, spec


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"gpus": 1}, DeviceRequest(count=1, capabilities=[["gpu"]])),
        ({"gpus": 1, "gpu_ids": ("3",)}, DeviceRequest(device_ids=["3"], capabilities=[["gpu"]])),
    ],
)
def test_gpu_device_requests(overrides: dict[str, Any], expected: DeviceRequest) -> None:
    driver, client, spec = make(**overrides)
    driver.create(spec)
    [request] = client.containers.created[0]["device_requests"]
    assert dict(request) == dict(expected)
    assert "--device" in client.containers.created[0]["command"]


def test_container_spec() -> None:
    driver, client, spec = make(cpus=1.5, memory_mb=3072)
    observed = driver.create(spec)
    [kwargs] = client.containers.created
    assert kwargs["image"] == "hangar-runtime:latest"
    assert kwargs["device_requests"] is None
    assert kwargs["nano_cpus"] == 1_500_000_000 and kwargs["mem_limit"] == "3072m"
    assert kwargs["ports"] == {"8000/tcp": ("127.0.0.1", None)}
    assert kwargs["mounts"] == [Mount(target="/model", source="/srv/models/tiny", type="bind", read_only=True)]
    assert kwargs["labels"]["hangar.deployment"] == "5" and kwargs["labels"]["hangar.generation"] == "1"
    assert kwargs["command"][:6] == ["--model", "/model", "--host", "0.0.0.0", "--port", "8000"]
    assert "restart_policy" not in kwargs  # the reconciler replaces dead replicas, not Docker
    assert observed.endpoint == "http://127.0.0.1:49153"
    assert observed.started_at is not None and observed.started_at.microsecond == 123456


@pytest.mark.parametrize(
    "publish_host, bound, endpoint",
    [("10.1.2.3", "10.1.2.3", "http://10.1.2.3:49153"), ("::1", "::1", "http://[::1]:49153")],
)
def test_ports_are_published_and_called_on_the_targets_publish_host(
    publish_host: str, bound: str, endpoint: str
) -> None:
    driver, client, spec = make(publish_host=publish_host)
    observed = driver.create(spec)
    assert client.containers.created[0]["ports"] == {"8000/tcp": (bound, None)}
    assert observed.endpoint == endpoint


def test_the_container_gets_its_token_and_nothing_of_the_workers_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("HANGAR_SECRET_KEY", "the-control-planes-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://hangar:pw@db/hangar")
    driver, client, spec = make(token="the-deployments-token")
    driver.create(spec)
    [kwargs] = client.containers.created
    assert kwargs["environment"] == {"HANGAR_RUNTIME_PORT": "8000", "HANGAR_RUNTIME_TOKEN": "the-deployments-token"}
    assert "the-deployments-token" not in " ".join(kwargs["command"])
