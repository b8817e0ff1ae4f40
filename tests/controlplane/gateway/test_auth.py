"""API keys at the gateway: formats, expiry, revocation across processes, scopes, tenancy."""

from __future__ import annotations

from datetime import timedelta

import httpx
from django.utils import timezone

from controlplane.core import secrets
from controlplane.core.context import SYSTEM
from controlplane.keys.models import ApiKey
from controlplane.keys.services import api_key_revoke
from tests.controlplane.gateway.conftest import auth, start_gateway, start_stub
from tests.factories import TenantFactory
from tests.support.waiting import wait_for

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def chat(url: str, token: str | None, **body) -> httpx.Response:
    headers = auth(token) if token is not None else {}
    return httpx.post(f"{url}/v1/chat/completions", json={**CHAT, **body}, headers=headers)


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    return error


def test_missing_malformed_and_unknown_keys_are_401_without_echo(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key()
    serve_model(key.tenant, "m", stub_upstream.url)
    assert_openai_error(chat(gateway.url, None), 401, "missing_api_key")
    forged_body = f"hgr_{'A' * 12}_{'b' * 32}"
    forged = forged_body + secrets._checksum(forged_body)  # well formed, unknown key id
    typo = token[:-1] + ("a" if token[-1] != "a" else "b")
    wrong_secret_body = f"hgr_{key.key_id}_{'c' * 32}"
    wrong_secret = wrong_secret_body + secrets._checksum(wrong_secret_body)
    for bad in ("hgr_", "sk-123", typo, forged, wrong_secret, token + "x", token.upper()):
        response = chat(gateway.url, bad)
        error = assert_openai_error(response, 401, "invalid_api_key")
        assert bad[4:] not in error["message"] or len(bad) < 8
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Basic {token}"})
    assert_openai_error(response, 401)
    assert token not in response.text
    assert chat(gateway.url, token).status_code == 200


def test_expired_key_is_refused(gateway, stub_upstream, make_key, serve_model):
    key, token = make_key(expires_at=timezone.now() + timedelta(days=1))
    serve_model(key.tenant, "m", stub_upstream.url)
    assert chat(gateway.url, token).status_code == 200
    expired, expired_token = make_key(tenant=key.tenant)
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    error = assert_openai_error(chat(gateway.url, expired_token), 401, "api_key_expired")
    assert "expired" in error["message"]


def test_revoked_key_is_refused_by_other_gateway_processes(
    gateway, gateway_db_name, stub_upstream, make_key, serve_model
):
    key, token = make_key()
    serve_model(key.tenant, "m", stub_upstream.url)
    second = start_gateway(gateway_db_name)
    try:
        for server in (gateway, second):  # both processes now hold the verified key in their cache
            assert chat(server.url, token).status_code == 200
        api_key_revoke(actor=SYSTEM, key=key)
        for server in (gateway, second):
            refused = wait_for(
                lambda server=server: (answer := chat(server.url, token)).status_code != 200 and answer,
                60,
                f"the revoked key refused by {server.url}",
                interval=0.05,
            )
            assert_openai_error(refused, 401, "api_key_revoked")
    finally:
        second.stop()


def test_scopes_are_enforced(gateway, stub_upstream, make_key, serve_model):
    tenant = TenantFactory()
    serve_model(tenant, "m", stub_upstream.url)
    _, list_only = make_key(tenant=tenant, scopes=["models:read"])
    _, infer_only = make_key(tenant=tenant, scopes=["inference"])
    assert_openai_error(chat(gateway.url, list_only), 403, "insufficient_scope")
    assert httpx.get(f"{gateway.url}/v1/models", headers=auth(list_only)).status_code == 200
    assert chat(gateway.url, infer_only).status_code == 200
    assert_openai_error(httpx.get(f"{gateway.url}/v1/models", headers=auth(infer_only)), 403, "insufficient_scope")


def test_allowed_models_restrict_the_key(gateway, stub_upstream, make_key, serve_model):
    tenant = TenantFactory()
    serve_model(tenant, "m", stub_upstream.url)
    serve_model(tenant, "other", stub_upstream.url)
    _, token = make_key(tenant=tenant, allowed_models=["m"])
    assert chat(gateway.url, token).status_code == 200
    assert_openai_error(chat(gateway.url, token, model="other"), 404, "model_not_found")
    listed = httpx.get(f"{gateway.url}/v1/models", headers=auth(token)).json()
    assert [m["id"] for m in listed["data"]] == ["m"]


def test_a_tenant_cannot_reach_another_tenants_model_by_any_name(gateway, make_key, serve_model):
    a_stub, b_stub = start_stub(model="upstream-a"), start_stub(model="upstream-b")
    try:
        tenant_a, tenant_b = TenantFactory(), TenantFactory()
        b_private = serve_model(tenant_b, "b-private", b_stub.url)
        serve_model(tenant_b, "shared", b_stub.url)
        serve_model(tenant_a, "shared", a_stub.url)
        _, token_a = make_key(tenant=tenant_a)
        names = [
            "b-private",
            b_private.name,
            str(b_private.pk),
            f"{tenant_b.slug}/b-private",
            f"{tenant_b.pk}/b-private",
            "B-PRIVATE",
            " b-private",
        ]
        for name in names:
            assert_openai_error(chat(gateway.url, token_a, model=name), 404, "model_not_found")
        served = chat(gateway.url, token_a, model="shared")
        assert served.status_code == 200
        assert served.json()["model"] == "upstream-a"  # tenant A's own replica answered
        listed = httpx.get(f"{gateway.url}/v1/models", headers=auth(token_a)).json()
        assert [m["id"] for m in listed["data"]] == ["shared"]
        response = httpx.get(f"{gateway.url}/v1/models/b-private", headers=auth(token_a))
        assert_openai_error(response, 404, "model_not_found")
    finally:
        a_stub.stop()
        b_stub.stop()


def test_keys_never_appear_in_urls_answers_or_logs(gateway_db_name, stub_upstream, make_key, serve_model, tmp_path):
    key, token = make_key()
    serve_model(key.tenant, "m", stub_upstream.url)
    log = tmp_path / "gateway.log"
    server = start_gateway(gateway_db_name, log_path=log, extra_env={"HANGAR_LOG_LEVEL": "DEBUG"})
    try:
        seen = []
        seen.append(chat(server.url, token))
        seen.append(chat(server.url, token[:-1] + "x"))
        seen.append(httpx.get(f"{server.url}/v1/models?api_key={token}"))
        seen.append(chat(server.url, token, model="nope"))
        seen.append(chat(server.url, token, max_tokens="many"))
        api_key_revoke(actor=SYSTEM, key=key)
        seen.append(
            wait_for(
                lambda: (answer := chat(server.url, token)).status_code == 401 and answer, 30, "the revocation seen"
            )
        )
    finally:
        server.stop()
    secret = token.split("_")[2]
    for response in seen:
        assert secret[:16] not in response.text
    assert seen[2].status_code == 401  # a key in the URL is not a key
    text = log.read_text()
    assert secret[:16] not in text
