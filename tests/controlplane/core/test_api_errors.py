"""Malformed input gets a clear 4xx, never a 500: bodies, types, fields, ids, filters, sizes."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.asgi import get_asgi_application
from django.utils import timezone

from controlplane.core.api import BodySizeLimit
from controlplane.tenancy.choices import Role
from controlplane.usage.models import UsageRecord
from tests.controlplane.api_mixins import rows
from tests.factories import DeploymentFactory, ModelFactory, TargetFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(tenant: Any, make_member: Any, client_for: Any) -> Any:
    return client_for(make_member(Role.OPERATOR, tenant))


def post_raw(client: Any, url: str, body: bytes | str, content_type: str = "application/json") -> Any:
    return client.generic("POST", url, body, content_type=content_type)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "JSON parse error"),
        (b'{"name": "x",}', "JSON parse error"),
        (b"\xff\xfe\x00garbage", "JSON parse error"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"name": "a\\u0000b"}', "NUL or unpaired surrogates"),
        (b'{"name": "\\ud800"}', "NUL or unpaired surrogates"),
        (b'{"name": NaN}', "JSON parse error"),
        (b'{"replicas": 1' + b"0" * 5000 + b"}", "JSON parse error"),
    ],
)
def test_unparseable_bodies_are_400(operator_client: Any, body: bytes, message: str) -> None:
    response = post_raw(operator_client, "/api/v1/deployments/", body)
    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"text"', "42", "null", "true"])
def test_non_object_bodies_are_400(operator_client: Any, body: str) -> None:
    response = post_raw(operator_client, "/api/v1/keys/", body)
    assert response.status_code == 400, response.content
    assert "non_field_errors" in response.json()["errors"] or response.json()["detail"]


def test_form_bodies_are_415(operator_client: Any) -> None:
    response = post_raw(operator_client, "/api/v1/keys/", "name=x", "application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_wrong_types_are_field_errors(tenant: Any, operator_client: Any) -> None:
    model, target = ModelFactory(tenant=tenant), TargetFactory(tenant=tenant)
    data = {
        "name": ["chat"],
        "model": "first",
        "target": target.pk,
        "replicas": "many",
        "cpus": {"n": 1},
        "autoscale": "maybe",
        "gpu_ids": "0,1",
        "node_selector": ["a"],
        "host_port": 80,
        "max_batch_size": None,
    }
    response = operator_client.post("/api/v1/deployments/", data, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {
        "name",
        "model",
        "replicas",
        "cpus",
        "autoscale",
        "gpu_ids",
        "node_selector",
        "host_port",
        "max_batch_size",
    }
    assert errors["replicas"] == ["A valid integer is required."]
    assert errors["max_batch_size"] == ["This field may not be null."]
    assert model.pk  # the valid ids raised nothing


def test_unknown_fields_are_rejected_everywhere(tenant: Any, operator_client: Any) -> None:
    deployment = DeploymentFactory(tenant=tenant)
    for method, url in [
        ("post", "/api/v1/keys/"),
        ("post", "/api/v1/models/"),
        ("post", "/api/v1/deployments/"),
        ("patch", f"/api/v1/deployments/{deployment.pk}/"),
        ("patch", f"/api/v1/models/{deployment.model_id}/"),
        ("post", f"/api/v1/deployments/{deployment.pk}/scale/"),
    ]:
        response = getattr(operator_client, method)(url, {"bogus": 1}, format="json")
        assert response.status_code == 400, (url, response.content)
        assert response.json()["errors"]["bogus"] == ["Unknown field."], url


def test_missing_required_fields(operator_client: Any) -> None:
    errors = operator_client.post("/api/v1/deployments/", {}, format="json").json()["errors"]
    assert set(errors) == {"name", "model", "target"}
    assert errors["name"] == ["This field is required."]


@pytest.mark.parametrize("suffix", ["abc/", "1.5/", "-1/", "99999999999999999999999999/", "0/"])
def test_bad_ids_are_404(operator_client: Any, suffix: str) -> None:
    for endpoint in ("deployments", "models", "targets", "replicas", "events", "keys", "usage", "audit", "members"):
        response = operator_client.get(f"/api/v1/{endpoint}/{suffix}")
        assert response.status_code == 404, (endpoint, suffix, response.status_code)


def test_bad_filters_are_field_errors(operator_client: Any) -> None:
    cases = [
        ("replicas", {"deployment": "x"}),
        ("replicas", {"deployment": str(10**30)}),
        ("replicas", {"state": "asleep"}),
        ("deployments", {"phase": "Flying"}),
        ("deployments", {"name": "a\x00b"}),
        ("usage", {"until": "2026-13-45"}),
        ("usage", {"until": ""}),
        ("events", {"reason": ""}),
        ("deployments", {"name": ""}),
        ("replicas", {"deployment": "0"}),
        ("keys", {"active": "perhaps"}),
        ("members", {"tenant": "not a slug!"}),
    ]
    for endpoint, params in cases:
        response = operator_client.get(f"/api/v1/{endpoint}/", params)
        assert response.status_code == 400, (endpoint, params, response.content)
        assert set(response.json()["errors"]) == set(params)


def test_paging_is_validated_and_bounded(tenant: Any, operator_client: Any) -> None:
    for _ in range(3):
        DeploymentFactory(tenant=tenant)
    url = "/api/v1/deployments/"
    assert operator_client.get(url, {"offset": str(10**30)}).status_code == 200
    for params in ({"limit": "lots"}, {"limit": "0"}, {"limit": "-1"}, {"offset": "null"}, {"offset": "-5"}, {"offset": ""}, {"limit": "1.5"}):  # fmt: skip
        response = operator_client.get(url, params)
        assert response.status_code == 400, (params, response.content)
        assert set(response.json()["errors"]) == set(params)
    assert operator_client.get(url, {"ordering": "secret_field"}).status_code == 200
    assert operator_client.get(url, {"limit": 100_000}).json()["next"] is None
    names = [d["name"] for d in rows(operator_client.get(url, {"ordering": "-name"}))]
    assert names == sorted(names, reverse=True)


def test_max_page_size(tenant: Any, operator_client: Any) -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    UsageRecord.objects.bulk_create(
        UsageRecord(tenant=tenant, model="m", minute=now - timedelta(minutes=i)) for i in range(510)
    )
    body = operator_client.get("/api/v1/usage/", {"limit": 1000}).json()
    assert body["count"] == 510 and len(body["results"]) == 500 and body["next"]


def test_declared_oversized_body_is_413(operator_client: Any, settings: Any) -> None:
    body = json.dumps({"name": "x" * (settings.HANGAR_MAX_BODY_BYTES + 1)})
    assert post_raw(operator_client, "/api/v1/keys/", body).status_code == 413


def test_chunked_body_without_length_is_not_read(operator_client: Any) -> None:
    # WSGI: no Content-Length means no body; the request is judged on what was declared.
    response = operator_client.generic(
        "POST",
        "/api/v1/keys/",
        json.dumps({"name": "k"}),
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )
    assert response.status_code == 400
    assert response.json()["errors"]["name"] == ["This field is required."]


def _asgi_post(app: Any, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    async def run() -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/v1/keys/",
            "raw_path": b"/api/v1/keys/",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), *headers],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000),
        }
        communicator = ApplicationCommunicator(app, scope)
        for index, chunk in enumerate(chunks):
            await communicator.send_input({"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1})
        start = await communicator.receive_output(timeout=10)
        body = await communicator.receive_output(timeout=10)
        await communicator.wait(timeout=10)
        return start["status"], body.get("body", b"")

    return asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_chunked_oversized_body_is_413_through_the_asgi_limit(settings: Any) -> None:
    limit = settings.HANGAR_MAX_BODY_BYTES
    app = BodySizeLimit(get_asgi_application())
    chunk = b"x" * (limit // 2 + 1)
    status, body = _asgi_post(app, [b'{"name": "', chunk, chunk, b'"}'], [(b"transfer-encoding", b"chunked")])
    assert status == 413, body
    status, body = _asgi_post(app, [b"{}"], [(b"content-length", str(limit + 1).encode())])
    assert status == 413
    # A small chunked body passes through the limit untouched (then fails authentication).
    status, _ = _asgi_post(app, [b'{"na', b'me": "k"}'], [(b"transfer-encoding", b"chunked")])
    assert status == 401


def test_a_lost_uniqueness_race_is_409_not_500(
    tenant: Any, operator_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import IntegrityError

    from controlplane.deployments import services

    def racing(**kwargs: Any) -> None:
        raise IntegrityError('duplicate key value violates unique constraint "deployment_unique_name_per_tenant"')

    monkeypatch.setattr(services, "deployment_create", racing)
    model, target = ModelFactory(tenant=tenant), TargetFactory(tenant=tenant)
    data = {"name": "chat", "model": model.pk, "target": target.pk}
    response = operator_client.post("/api/v1/deployments/", data, format="json")
    assert response.status_code == 409


@pytest.mark.parametrize(
    "endpoint", ["tenants", "members", "models", "targets", "deployments", "replicas", "events", "keys", "usage", "audit", "tokens"]
)  # fmt: skip
def test_options_and_head_answer(tenant: Any, make_member: Any, client_for: Any, endpoint: str) -> None:
    client = client_for(make_member(Role.OWNER, tenant))
    options = client.options(f"/api/v1/{endpoint}/")
    assert options.status_code == 200, options.content
    assert client.head(f"/api/v1/{endpoint}/").status_code == 200


def test_every_declared_ordering_works(tenant: Any, make_member: Any, client_for: Any) -> None:
    from console.api_urls import router

    member = client_for(make_member(Role.OWNER, tenant))
    platform_admin = client_for(UserFactory(is_superuser=True, is_staff=True))  # platform/... is theirs only
    DeploymentFactory(tenant=tenant)
    for prefix, viewset, _ in router.registry:
        client = platform_admin if prefix.startswith("platform/") else member
        for field in viewset.ordering_fields:
            for term in (field, f"-{field}", f"{field},-id"):
                response = client.get(f"/api/v1/{prefix}/", {"ordering": term})
                assert response.status_code == 200, (prefix, term, response.content[:300])


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json; charset=bogus", 400),
        ("application/json; charset=utf-16", 400),
        ("application/json; charset=latin-1", 201),
        ("application/vnd.api+json", 415),
        ("text/plain", 415),
    ],
)
def test_charsets_and_media_types(operator_client: Any, content_type: str, status: int) -> None:
    response = operator_client.generic("POST", "/api/v1/keys/", b'{"name": "k\xe9"}', content_type=content_type)
    assert response.status_code == status, response.content


def test_wrong_json_types_are_not_coerced(tenant: Any, make_member: Any, client_for: Any) -> None:
    client = client_for(make_member(Role.OWNER, tenant))
    url = f"/api/v1/tenants/{tenant.slug}/"
    response = client.patch(url, {"name": 0, "rpm_limit": "5", "tpm_limit": True}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "name": ["Not a valid string."],
        "rpm_limit": ["A valid integer is required."],
        "tpm_limit": ["A valid integer is required."],
    }
    assert client.patch(url, {"rpm_limit": 5.0}, format="json").status_code == 200


def test_schema_documents_errors_and_closed_bodies() -> None:
    from rest_framework.test import APIClient

    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    detail = schema["paths"]["/api/v1/deployments/{id}/"]
    assert {"401", "403", "404", "500", "503"} <= set(detail["get"]["responses"])
    assert {"400", "404", "409", "413", "415"} <= set(detail["patch"]["responses"])
    listing = schema["paths"]["/api/v1/deployments/"]["get"]
    assert listing["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationError")
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1}
    assert params["offset"] == {"type": "integer", "minimum": 0}
    assert params["name"]["minLength"] == 1 and params["name"]["maxLength"] == 63
    assert schema["components"]["schemas"]["PatchedTenantUpdateInputRequest"]["additionalProperties"] is False
