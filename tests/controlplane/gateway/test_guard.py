"""The gateway's doors before a key is trusted (issue 12, items 8 and 10): ``/metrics`` answers
only with the scrape token; forged well-formed keys are refused without a database lookup
(keyed checksums; old CRC32 keys only for the key ids flagged at migration); failed
authentications are throttled per client address across gateway processes."""

from __future__ import annotations

import secrets as random_secrets
import uuid
import zlib
from dataclasses import replace

import httpx
import pytest

from controlplane.core import secrets
from controlplane.gateway.conf import load
from controlplane.gateway.errors import GatewayError
from controlplane.gateway.guard import require_scrape_token
from controlplane.keys.models import ApiKey
from tests.controlplane.gateway.conftest import RUN_ID, auth, metric_value, scrape_headers, start_gateway

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def chat(url: str, token: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth(token))


def crc32_token(key_id: str, secret: str) -> str:
    """A token as keys were issued before keyed checksums: anyone can compute this checksum."""
    body = f"hgr_{key_id}_{secret}"
    return body + secrets._base62(zlib.crc32(body.encode()), secrets.CHECKSUM_LEN)


def random_id(length: int) -> str:
    return "".join(random_secrets.choice(secrets.ALPHABET) for _ in range(length))


def lookups(url: str) -> float:
    """Key id lookups the gateway sent to its database (cache misses)."""
    return metric_value(url, 'hangar_gateway_key_cache_total{result="miss"}') or 0.0


# ----------------------------------------------------------------------------- /metrics (item 8)


def test_metrics_answer_only_with_the_scrape_token(gateway):
    missing = httpx.get(f"{gateway.url}/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["code"] == "invalid_scrape_token"
    assert "hangar_gateway" not in missing.text
    wrong = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    basic = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": scrape_headers()["Authorization"][7:]})
    assert basic.status_code == 401  # the token without the Bearer scheme
    answered = httpx.get(f"{gateway.url}/metrics", headers=scrape_headers())
    assert answered.status_code == 200
    assert "hangar_gateway_requests_total" in answered.text


def test_metrics_are_closed_when_no_scrape_token_is_set():
    conf = replace(load(), metrics_token="")
    for headers in ([], [(b"authorization", b"Bearer ")], [(b"authorization", b"Bearer x")]):
        with pytest.raises(GatewayError) as refused:
            require_scrape_token(conf, headers)
        assert refused.value.status == 401 and "HANGAR_METRICS_TOKEN" in refused.value.message


# ----------------------------------------------------------------------------- keyed checksums (item 10)


@pytest.fixture
def fresh_gateway(gateway_db_name):
    """A gateway process of its own: it reads the legacy key ids on first need, after the test made them."""
    server = start_gateway(gateway_db_name)
    yield server
    server.stop()


def test_forged_keys_are_refused_without_a_database_lookup(fresh_gateway, stub_upstream, make_key, serve_model):
    key, token = make_key()
    serve_model(key.tenant, "m", stub_upstream.url)
    old, _ = make_key(tenant=key.tenant)
    old_secret = random_id(secrets.SECRET_LEN)
    ApiKey.objects.filter(pk=old.pk).update(legacy_checksum=True, digest=secrets.digest(old_secret))
    url = fresh_gateway.url
    assert chat(url, token).status_code == 200  # a key issued now: keyed checksum
    # An old key keeps working during the transition (flagged by the migration)...
    assert chat(url, crc32_token(old.key_id, old_secret)).status_code == 200
    before = lookups(url)
    # ...but forged well-formed tokens, with CRC32 (as anyone can compute) or guessed checksums,
    # for unknown key ids or for the new key's id, are refused before any lookup.
    forged = [crc32_token(random_id(12), random_id(32)) for _ in range(20)]
    forged += [f"hgr_{random_id(12)}_{random_id(32)}{random_id(6)}" for _ in range(20)]
    forged += [crc32_token(key.key_id, random_id(32))]  # a key not flagged: no CRC32 form
    for bad in forged:
        response = chat(url, bad)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert lookups(url) == before
    # Only a token checksummed with the server's pepper reaches the database (an unknown id here).
    body = f"hgr_{random_id(12)}_{random_id(32)}"
    assert chat(url, body + secrets._checksum(body)).status_code == 401
    assert lookups(url) == before + 1


def test_keyed_checksums_depend_on_the_pepper(settings):
    issued = secrets.issue("hgr")
    assert secrets.parse(issued.token, "hgr") is not None
    settings.HANGAR_KEY_PEPPER = "another-pepper-" + uuid.uuid4().hex
    assert secrets.parse(issued.token, "hgr") is None  # a checksum only the server could make


# ----------------------------------------------------------------------------- throttle (item 10)


def test_failed_authentications_are_throttled_per_address_across_processes(
    gateway_db_name, stub_upstream, make_key, serve_model
):
    key, token = make_key()
    serve_model(key.tenant, "m", stub_upstream.url)
    env = {
        "HANGAR_GATEWAY_AUTH_FAILURES": "5",
        "HANGAR_GATEWAY_AUTH_FAILURE_WINDOW": "86400",  # one window for the whole test
        "HANGAR_GATEWAY_REDIS_PREFIX": f"hangar:gwtest:{RUN_ID}:throttle:{uuid.uuid4().hex[:6]}:",
    }
    one = start_gateway(gateway_db_name, extra_env=env)
    two = start_gateway(gateway_db_name, extra_env=env)
    try:
        assert chat(one.url, token).status_code == 200
        codes = [chat(one.url, "hgr_nope").status_code for _ in range(5)]
        codes.append(httpx.get(f"{one.url}/v1/models").status_code)  # no key at all counts too
        assert codes == [401] * 5 + [429], codes
        refused = chat(one.url, token)  # even a valid key: the address is throttled
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(refused.headers["retry-after"]) <= 86400
        # The other process counts with the same Redis: one more failure there and it refuses too.
        assert chat(two.url, token).status_code == 200
        assert chat(two.url, "hgr_nope").status_code == 401
        assert chat(two.url, token).status_code == 429
    finally:
        one.stop()
        two.stop()
