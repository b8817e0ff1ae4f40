"""Uploading a model through the REST API over real HTTP (pytest-django's live server, httpx,
PostgreSQL): chunks resumed after one is cut off mid-body, a corrupted file refused and sent
again, path tricks and pickle refused, limits, another tenant kept out, and the uploaded model
deployed on the local driver until its replica runs."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from controlplane.catalog.models import Model
from controlplane.tenancy.choices import Role
from tests.factories import AccessTokenFactory, DeploymentFactory, TargetFactory, TenantFactory
from workers import reconciler
from workers.drivers.local import LocalDriver

FAKE = "tests.workers.fake_runtime"
CHUNK = 4 * 1024 * 1024  # the tiny model's weights (15 MB) take four

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def store(settings: Any, tmp_path: Path) -> Path:
    settings.HANGAR_MODEL_STORE_DIR = str(tmp_path / "store")
    settings.HANGAR_UPLOAD_CHUNK_BYTES = CHUNK
    return tmp_path / "store"


@pytest.fixture
def api(live_server: Any, make_member: Any) -> Callable[..., httpx.Client]:
    clients: list[httpx.Client] = []

    def make(role: str = Role.OPERATOR, tenant: Any = None) -> httpx.Client:
        user = make_member(role, tenant)
        token = AccessTokenFactory(user=user)
        client = httpx.Client(base_url=f"{live_server.url}/api/v1", headers={"Authorization": f"Bearer {token.secret}"})
        clients.append(client)
        return client

    yield make  # type: ignore[misc]
    for client in clients:
        client.close()


def declared(model_dir: Path) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(model_dir.iterdir())
        if p.is_file()
    ]


def put_chunk(client: httpx.Client, upload_id: int, name: str, offset: int, data: bytes) -> httpx.Response:
    return client.put(
        f"/uploads/{upload_id}/chunk/",
        params={"file": name, "offset": offset},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def send_file(client: httpx.Client, upload_id: int, name: str, data: bytes, start: int = 0) -> None:
    for offset in range(start, len(data), CHUNK):
        response = put_chunk(client, upload_id, name, offset, data[offset : offset + CHUNK])
        assert response.status_code == 200, response.text
        assert response.json()["received"] == min(offset + CHUNK, len(data))


def received(client: httpx.Client, upload_id: int) -> dict[str, int]:
    response = client.get(f"/uploads/{upload_id}/")
    assert response.status_code == 200, response.text
    return {f["name"]: f["received"] for f in response.json()["files"]}


def cut_off_chunk(client: httpx.Client, base_url: str, path: str, data: bytes, sent: int) -> bytes:
    """A PUT of ``data`` whose connection stops after ``sent`` bytes of the body: the reply."""
    parts = urlsplit(base_url)
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {client.headers['Authorization']}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + data[:sent])
        sock.shutdown(socket.SHUT_WR)  # the client dies mid-chunk
        reply = b""
        while piece := sock.recv(65536):
            reply += piece
    return reply


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[LocalDriver]:
    drv = LocalDriver(state_dir=tmp_path / "replicas", instance="upload-test", runtime_module=FAKE)
    yield drv
    for replica in drv.list():
        drv.remove(replica.backend_id)


def test_an_upload_resumes_after_a_cut_chunk_is_verified_and_deploys(
    store: Path, api: Callable[..., httpx.Client], live_server: Any, tiny_model_dir: Path, driver: LocalDriver
) -> None:
    client = api()
    files = declared(tiny_model_dir)
    created = client.post("/uploads/", json={"name": "tiny-upload", "files": files})
    assert created.status_code == 201, created.text
    upload_id = created.json()["id"]
    assert received(client, upload_id) == {f["name"]: 0 for f in files}

    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    assert len(weights) > 3 * CHUNK, "the weights need several chunks"
    send_file(client, upload_id, "model.safetensors", weights[: 2 * CHUNK])
    # The third chunk's connection dies halfway: nothing of it is kept.
    reply = cut_off_chunk(
        client,
        live_server.url,
        f"/api/v1/uploads/{upload_id}/chunk/?file=model.safetensors&offset={2 * CHUNK}",
        weights[2 * CHUNK : 3 * CHUNK],
        sent=CHUNK // 2,
    )
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"Chunk cut short" in reply
    assert received(client, upload_id)["model.safetensors"] == 2 * CHUNK
    # A chunk at the wrong offset is refused with the offset to use.
    wrong = put_chunk(client, upload_id, "model.safetensors", 0, weights[:CHUNK])
    assert wrong.status_code == 409 and f"offset {2 * CHUNK}" in wrong.json()["detail"]
    # Resumed from what the server holds.
    send_file(client, upload_id, "model.safetensors", weights, start=received(client, upload_id)["model.safetensors"])
    for entry in files:
        if entry["name"] != "model.safetensors":
            send_file(client, upload_id, entry["name"], (tiny_model_dir / entry["name"]).read_bytes())
    assert received(client, upload_id) == {f["name"]: f["size"] for f in files}

    done = client.post(f"/uploads/{upload_id}/complete/")
    assert done.status_code == 201, done.text
    body = done.json()
    assert body["name"] == "tiny-upload" and body["format"] == "safetensors"
    assert body["architecture"] == "LlamaForCausalLM"
    assert {(f["name"], f["sha256"]) for f in body["manifest"]} == {(f["name"], f["sha256"]) for f in files}
    model = Model.objects.get(pk=body["id"])
    assert Path(model.source).parent == (store / model.tenant.slug).resolve()
    assert (Path(model.source) / "model.safetensors").read_bytes() == weights
    assert client.get(f"/uploads/{upload_id}/").json()["status"] == "complete"

    deployment = DeploymentFactory(
        tenant=model.tenant, model=model, target=TargetFactory(tenant=model.tenant, kind="local"), replicas=1
    )
    outcome = reconciler.reconcile(deployment.pk, owner="upload-test", driver_factory=lambda *_, **__: driver)
    assert not outcome.temporary_error, outcome.temporary_error
    [replica] = driver.list(deployment.pk)
    assert replica.state == "running"

    # Deleting the model (once no deployment uses it) takes its files out of the store.
    deployment.delete()
    assert client.delete(f"/models/{model.pk}/").status_code == 204
    assert not Path(model.source).exists()
    assert client.get(f"/uploads/{upload_id}/").status_code == 404


def test_a_file_whose_checksum_differs_is_refused_and_sent_again(
    store: Path, api: Callable[..., httpx.Client], tiny_model_dir: Path
) -> None:
    client = api()
    files = declared(tiny_model_dir)
    upload_id = client.post("/uploads/", json={"name": "tiny", "files": files}).json()["id"]
    for entry in files:
        data = bytearray((tiny_model_dir / entry["name"]).read_bytes())
        if entry["name"] == "model.safetensors":
            data[len(data) // 2] ^= 0xFF  # one byte flipped on the way
        send_file(client, upload_id, entry["name"], bytes(data))

    refused = client.post(f"/uploads/{upload_id}/complete/")
    assert refused.status_code == 400, refused.text
    assert "'model.safetensors' does not match its sha256" in refused.json()["errors"]["files"][0]
    assert not Model.objects.filter(name="tiny").exists()
    assert received(client, upload_id)["model.safetensors"] == 0  # discarded, to send again

    send_file(client, upload_id, "model.safetensors", (tiny_model_dir / "model.safetensors").read_bytes())
    assert client.post(f"/uploads/{upload_id}/complete/").status_code == 201
    assert Model.objects.filter(name="tiny").exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../escape.safetensors", "without '..'"),
        ("/etc/cron.d/x.safetensors", "without '..'"),
        ("sub\\..\\x.safetensors", "without '..'"),
        ("a/../../x.safetensors", "without '..'"),
        (".cache/x.safetensors", "no hidden parts"),
        ("pytorch_model.bin", "safetensors weights and config or tokenizer files"),
        ("model.pt", "safetensors weights and config or tokenizer files"),
    ],
)
def test_path_tricks_and_pickle_are_refused(store: Path, api: Callable[..., httpx.Client], name: str, why: str) -> None:
    files = [
        {"name": "model.safetensors", "size": 10, "sha256": "0" * 64},
        {"name": name, "size": 10, "sha256": "0" * 64},
    ]
    response = api().post("/uploads/", json={"name": "m", "files": files})
    assert response.status_code == 400, response.text
    assert why in response.json()["errors"]["files"][0]
    assert not store.exists()  # nothing was stored


def test_a_chunk_names_only_a_declared_file(store: Path, api: Callable[..., httpx.Client]) -> None:
    client = api()
    files = [{"name": "model.safetensors", "size": 10, "sha256": "0" * 64}]
    upload_id = client.post("/uploads/", json={"name": "m", "files": files}).json()["id"]
    for name in ("../model.safetensors", "/tmp/model.safetensors", "other.safetensors"):
        response = put_chunk(client, upload_id, name, 0, b"x" * 10)
        assert response.status_code == 400, name
        assert "is not declared in this upload" in response.json()["errors"]["file"][0]
    past_end = put_chunk(client, upload_id, "model.safetensors", 0, b"x" * 11)
    assert past_end.status_code == 400 and "declared with 10 bytes" in past_end.text
    assert received(client, upload_id) == {"model.safetensors": 0}
    assert not (store.parent / "model.safetensors").exists() and not Path("/tmp/model.safetensors").exists()


def test_size_limits_per_file_and_per_tenant(
    store: Path, api: Callable[..., httpx.Client], settings: Any, tenant: Any
) -> None:
    settings.HANGAR_UPLOAD_MAX_FILE_BYTES = 1000
    settings.HANGAR_UPLOAD_TENANT_BYTES = 1500
    client = api(tenant=tenant)
    big = client.post(
        "/uploads/", json={"name": "a", "files": [{"name": "x.safetensors", "size": 1001, "sha256": "0" * 64}]}
    )
    assert big.status_code == 400 and "larger than 1000 bytes" in big.text
    first = client.post(
        "/uploads/", json={"name": "a", "files": [{"name": "x.safetensors", "size": 1000, "sha256": "0" * 64}]}
    )
    assert first.status_code == 201, first.text
    over = client.post(
        "/uploads/", json={"name": "b", "files": [{"name": "x.safetensors", "size": 600, "sha256": "0" * 64}]}
    )
    assert over.status_code == 400 and "may hold 1500 bytes in the model store" in over.text
    # Aborting the first upload frees its share of the quota.
    assert client.delete(f"/uploads/{first.json()['id']}/").status_code == 204
    again = client.post(
        "/uploads/", json={"name": "b", "files": [{"name": "x.safetensors", "size": 600, "sha256": "0" * 64}]}
    )
    assert again.status_code == 201, again.text
    # Another tenant's quota is its own.
    other = api(tenant=TenantFactory())
    assert (
        other.post(
            "/uploads/", json={"name": "c", "files": [{"name": "x.safetensors", "size": 1000, "sha256": "0" * 64}]}
        ).status_code
        == 201
    )


def test_another_tenant_can_neither_see_nor_append_to_an_upload(
    store: Path, api: Callable[..., httpx.Client], tenant: Any
) -> None:
    owner = api(tenant=tenant)
    data = b"s" * 10
    files = [{"name": "model.safetensors", "size": 10, "sha256": hashlib.sha256(data).hexdigest()}]
    upload_id = owner.post("/uploads/", json={"name": "m", "files": files}).json()["id"]
    stranger = api(tenant=TenantFactory())
    assert stranger.get(f"/uploads/{upload_id}/").status_code == 404
    assert stranger.get("/uploads/").json()["results"] == []
    assert put_chunk(stranger, upload_id, "model.safetensors", 0, data).status_code == 404
    assert stranger.post(f"/uploads/{upload_id}/complete/").status_code == 404
    assert stranger.delete(f"/uploads/{upload_id}/").status_code == 404
    # A viewer of the owning tenant sees it but may not write to it.
    viewer = api(role=Role.VIEWER, tenant=tenant)
    assert viewer.get(f"/uploads/{upload_id}/").status_code == 200
    assert put_chunk(viewer, upload_id, "model.safetensors", 0, data).status_code == 403
    assert received(owner, upload_id) == {"model.safetensors": 0}
