"""The gateway's OpenAPI document, and its errors: JSON in OpenAI's shape for unknown URLs, wrong
methods (with ``Allow``) and unhandled failures (whose message repeats the request id)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from asgiref.testing import ApplicationCommunicator

from controlplane.gateway.app import Gateway
from tests.controlplane.gateway.conftest import auth


def test_openapi_document_is_served(gateway: Any) -> None:
    response = httpx.get(f"{gateway.url}/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/models/{model}",
    }
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "401", "403", "404", "413", "429", "503"} <= set(chat["responses"])


def test_unknown_urls_and_wrong_methods_are_json(gateway: Any) -> None:
    response = httpx.get(f"{gateway.url}/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
    response = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"
    response = httpx.get(f"{gateway.url}/v1/embeddings")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    response = httpx.delete(f"{gateway.url}/v1/models")
    assert response.status_code == 405 and response.headers["allow"] == "GET"


def _get(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, str], bytes]:
    async def run() -> tuple[int, dict[str, str], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
        }
        communicator = ApplicationCommunicator(app, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(timeout=20)
        body = await communicator.receive_output(timeout=20)
        await communicator.wait(timeout=20)
        await app.shutdown()
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]

    return asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_unhandled_failure_is_json_500_with_the_request_id(
    make_key: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _, token = make_key()
    app = Gateway()

    async def broken_route_table(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug in the route table")

    monkeypatch.setattr(app.routes, "get", broken_route_table)
    headers = [(b"x-request-id", b"gw-500-test"), *((k.lower().encode(), v.encode()) for k, v in auth(token).items())]
    status, response_headers, body = _get(app, "/v1/models", headers)
    assert status == 500
    assert response_headers["x-request-id"] == "gw-500-test"
    error = json.loads(body)["error"]
    assert error["type"] == "server_error" and "gw-500-test" in error["message"]
    assert any("gateway error on GET /v1/models" in r.getMessage() and r.exc_info for r in caplog.records)
