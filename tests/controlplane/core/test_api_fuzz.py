"""Random JSON at every write endpoint and random filters at every list: never a 500.

Hypothesis builds bodies from the endpoint's real field names (so validation goes deep, not
just "unknown field") and arbitrary JSON values: huge numbers, nested objects, NUL and
unpaired surrogates, wrong types. A 500 anywhere is a bug.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.tenancy.choices import Role
from tests.factories import (
    ApiKeyFactory,
    DeploymentFactory,
    MembershipFactory,
    ModelFactory,
    PlatformAdminFactory,
    TargetFactory,
    UserFactory,
)
from tests.support.model_dirs import make_tenant_model_dir

pytestmark = pytest.mark.django_db

# CI runs a fixed, quick sample; HANGAR_FUZZ_EXAMPLES=2000 explores afresh on a workstation.
EXAMPLES = int(os.environ.get("HANGAR_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=EXAMPLES or 60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not EXAMPLES,
    database=None,
)

text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
    | st.sampled_from(
        ["", "/", "0", "-1", "float16", "docker", "owner", "2030-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00"]
    )
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4), max_leaves=10
)

FIELDS = {
    "tenants": ["name", "slug", "rpm_limit", "tpm_limit", "monthly_token_budget"],
    "members": ["tenant", "username", "role"],
    "models": ["tenant", "name", "source", "description", "dtype_options", "allow_unsafe_weights", "trust_remote_code"],
    "platform/targets": [
        "name", "kind", "docker_url", "publish_host", "kube_auth", "kube_context", "kube_namespace",
        "model_volume", "node_selector", "tolerations", "labels", "gpu_inventory",
        "tls_ca", "tls_cert", "tls_key", "ssh_key", "kubeconfig",
    ],
    "platform/grants": ["target", "tenant", "namespace"],
    "deployments": [
        "tenant", "name", "model", "target", "served_model_name", "replicas", "min_replicas", "max_replicas",
        "gpus", "gpu_ids", "cpus", "memory_mb", "dtype", "quantization", "max_batch_size", "max_model_len",
        "max_tokens_cap", "node_selector", "tolerations", "host_port", "autoscale",
        "target_concurrency", "scale_to_zero_idle_seconds",
    ],
    "keys": ["tenant", "name", "scopes", "allowed_models", "rpm_limit", "tpm_limit", "monthly_token_budget", "expires_at"],
    "tokens": ["name", "expires_at"],
    "scale": ["replicas"],
}  # fmt: skip


def bodies(fields: list[str], base: dict[str, Any]) -> st.SearchStrategy[Any]:
    known = st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))
    # One bad field on an otherwise valid body reaches the services' own validation.
    one_field = st.tuples(st.sampled_from(fields), values).map(lambda kv: {**base, kv[0]: kv[1]})
    return (
        one_field
        | known.map(lambda over: {**base, **over})
        | st.dictionaries(st.sampled_from(fields) | text, values, max_size=6)
        | values
    )


@pytest.fixture
def world(tenant: Any, make_member: Any, client_for: Any) -> dict[str, Any]:
    owner = make_member(Role.OWNER, tenant)
    owner.is_staff = True
    owner.save()
    deployment = DeploymentFactory(tenant=tenant, max_replicas=4)
    return {
        "client": client_for(owner),
        "platform": client_for(PlatformAdminFactory()),
        "tenant": tenant,
        "deployment": deployment,
        "model": ModelFactory(tenant=tenant),
        "target": TargetFactory(tenant=tenant),
        "member": MembershipFactory(tenant=tenant, role=Role.VIEWER),
        "key": ApiKeyFactory(tenant=tenant),
        "model_dir": str(make_tenant_model_dir(tenant)),
        "user": UserFactory(),
    }


def send(client: Any, method: str, url: str, body: Any) -> int:
    response = client.generic(method.upper(), url, json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (method, url, body, response.content[:500])
    return int(response.status_code)


def base_for(endpoint: str, world: dict[str, Any]) -> dict[str, Any]:
    tenant = world["tenant"].slug
    return {
        "tenants": {"name": "Fuzz"},
        "members": {"tenant": tenant, "username": world["user"].username, "role": "viewer"},
        "models": {"tenant": tenant, "name": "fuzz", "source": world["model_dir"]},
        "platform/targets": {"name": "fuzz", "kind": "docker", "docker_url": "unix:///var/run/docker.sock"},
        "platform/grants": {"target": world["target"].pk, "tenant": tenant},
        "deployments": {
            "tenant": tenant,
            "name": "fuzz",
            "model": world["model"].pk,
            "target": world["target"].pk,
        },
        "keys": {"tenant": tenant, "name": "fuzz"},
        "tokens": {"name": "fuzz"},
        "scale": {"replicas": 1},
    }[endpoint]


def client_of(endpoint: str, world: dict[str, Any]) -> Any:
    return world["platform"] if endpoint.startswith("platform/") else world["client"]


@pytest.mark.parametrize(
    "endpoint", ["tenants", "members", "models", "platform/targets", "platform/grants", "deployments", "keys", "tokens"]
)
def test_create_never_500(endpoint: str, world: dict[str, Any]) -> None:
    @FUZZ
    @given(body=bodies(FIELDS[endpoint], base_for(endpoint, world)))
    def check(body: Any) -> None:
        send(client_of(endpoint, world), "post", f"/api/v1/{endpoint}/", body)

    check()


@pytest.mark.parametrize("endpoint", ["tenants", "members", "models", "platform/targets", "deployments"])
def test_update_never_500(endpoint: str, world: dict[str, Any]) -> None:
    obj = {
        "tenants": world["tenant"],
        "members": world["member"],
        "models": world["model"],
        "platform/targets": world["target"],
        "deployments": world["deployment"],
    }[endpoint]
    lookup = obj.slug if endpoint == "tenants" else obj.pk
    fields = [f for f in FIELDS[endpoint] if f not in ("tenant", "name", "source", "model", "target", "slug")]

    @FUZZ
    @given(body=bodies(fields, {}))
    def check(body: Any) -> None:
        send(client_of(endpoint, world), "patch", f"/api/v1/{endpoint}/{lookup}/", body)

    check()


def test_scale_never_500(world: dict[str, Any]) -> None:
    @FUZZ
    @given(body=bodies(FIELDS["scale"], {}))
    def check(body: Any) -> None:
        send(world["client"], "post", f"/api/v1/deployments/{world['deployment'].pk}/scale/", body)

    check()


LIST_PARAMS = {
    "members": ["tenant", "role"],
    "models": ["tenant", "name", "search"],
    "targets": ["tenant", "kind"],
    "platform/targets": ["kind", "name", "tenant"],
    "platform/grants": ["target", "tenant"],
    "deployments": ["tenant", "phase", "name", "served_model_name", "model", "target"],
    "replicas": ["deployment", "state"],
    "events": ["deployment", "type", "reason"],
    "keys": ["tenant", "active"],
    "usage": ["tenant", "api_key", "model", "since", "until"],
    "usage/totals": ["tenant", "api_key", "model", "since", "until"],
    "audit": ["tenant", "action", "object_type", "object_id", "actor", "since", "until"],
}
query_text = st.text(max_size=30) | st.integers(min_value=-(2**70), max_value=2**70).map(str)


@pytest.mark.parametrize("endpoint", list(LIST_PARAMS))
def test_list_filters_never_500(endpoint: str, world: dict[str, Any]) -> None:
    names = [*LIST_PARAMS[endpoint], "limit", "offset", "ordering"]

    @FUZZ
    @given(params=st.dictionaries(st.sampled_from(names), query_text, max_size=4))
    def check(params: dict[str, str]) -> None:
        response = client_of(endpoint, world).get(f"/api/v1/{endpoint}/", params)
        assert response.status_code < 500, (endpoint, params, response.content[:500])

    check()


@FUZZ
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_500(raw: bytes, world: dict[str, Any]) -> None:
    response = world["client"].generic("POST", "/api/v1/deployments/", raw, content_type="application/json")
    assert response.status_code < 500
