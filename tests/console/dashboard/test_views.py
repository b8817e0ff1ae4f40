"""Every dashboard page for every role: what each may see and do, and errors shown on forms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.audit.models import AuditLog
from controlplane.catalog.models import Model
from controlplane.deployments.choices import DesiredState
from controlplane.deployments.models import Deployment, MetricSample, Target
from controlplane.keys.models import ApiKey
from controlplane.tenancy.models import Membership
from tests.console.dashboard.conftest import ROLES
from tests.factories import (
    DeploymentFactory,
    MembershipFactory,
    ModelFactory,
    TargetFactory,
    TenantFactory,
    UsageRecordFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

LIST_PAGES = ["overview", "models", "targets", "keys", "usage", "members", "playground"]


def test_pages_need_login(client: Any) -> None:
    for name in [*LIST_PAGES, "audit"]:
        response = client.get(reverse(f"dashboard:{name}"))
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_login_and_logout(client: Any, team: dict[str, Any]) -> None:
    page = client.get("/login/")
    assert page.status_code == 200
    bad = client.post("/login/", {"username": team["viewer"].username, "password": "wrong"})
    assert bad.status_code == 200
    assert b"Please enter a correct username and password" in bad.content
    good = client.post("/login/", {"username": team["viewer"].username, "password": "pw-for-tests-1"})
    assert good.status_code == 302
    assert client.get("/").status_code == 200
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", LIST_PAGES)
def test_every_role_sees_the_list_pages(login: Any, team: dict[str, Any], role: str, name: str) -> None:
    response = login(team[role]).get(reverse(f"dashboard:{name}"))
    assert response.status_code == 200
    assert team["tenant"].slug.encode() in response.content


@pytest.mark.parametrize(("role", "status"), [("viewer", 403), ("operator", 403), ("admin", 200), ("owner", 200)])
def test_audit_log_is_for_admins(login: Any, team: dict[str, Any], role: str, status: int) -> None:
    response = login(team[role]).get(reverse("dashboard:audit"))
    assert response.status_code == status


@pytest.mark.parametrize("role", ROLES)
def test_detail_pages(login: Any, team: dict[str, Any], role: str) -> None:
    deployment = team["deployment"]
    client = login(team[role])
    for url in [
        reverse("dashboard:deployment-detail", args=[deployment.pk]),
        reverse("dashboard:deployment-logs", args=[deployment.pk]),
        reverse("dashboard:model-detail", args=[deployment.model_id]),
        reverse("dashboard:target-detail", args=[deployment.target_id]),
    ]:
        assert client.get(url).status_code == 200, url


def test_objects_of_other_tenants_are_not_found(login: Any, team: dict[str, Any]) -> None:
    other = DeploymentFactory()
    client = login(team["owner"])
    assert client.get(reverse("dashboard:deployment-detail", args=[other.pk])).status_code == 404
    assert client.get(reverse("dashboard:model-detail", args=[other.model_id])).status_code == 404
    assert client.get(reverse("dashboard:target-detail", args=[other.target_id])).status_code == 404
    assert client.post(reverse("dashboard:deployment-stop", args=[other.pk])).status_code == 404
    other.refresh_from_db()
    assert other.desired_state == DesiredState.RUNNING


def test_tenant_switcher_only_offers_own_tenants(login: Any, team: dict[str, Any]) -> None:
    second = TenantFactory()
    stranger = TenantFactory()
    MembershipFactory(user=team["viewer"], tenant=second, role="operator")
    client = login(team["viewer"])
    page = client.get("/")
    assert second.slug.encode() in page.content
    assert stranger.slug.encode() not in page.content
    assert client.post(reverse("dashboard:switch-tenant"), {"tenant": stranger.pk}).status_code == 404
    assert client.post(reverse("dashboard:switch-tenant"), {"tenant": second.pk, "next": "/models/"}).status_code == 302
    page = client.get("/")
    assert b"operator" in page.content  # the role shown is the one in the chosen tenant
    assert team["deployment"].name.encode() not in page.content


def test_a_user_without_tenant_gets_an_explanation(client: Any, db: Any) -> None:
    client.force_login(UserFactory())
    response = client.get("/")
    assert response.status_code == 403
    assert b"not a member of any tenant" in response.content


# ----------------------------------------------------------------------------- buttons per role


@pytest.mark.parametrize(("role", "visible"), [("viewer", False), ("operator", True), ("admin", True), ("owner", True)])
def test_deployment_actions_shown_only_to_those_allowed(
    login: Any, team: dict[str, Any], role: str, visible: bool
) -> None:
    content = login(team[role]).get(reverse("dashboard:deployment-detail", args=[team["deployment"].pk])).content
    assert (b'data-testid="deployment-actions"' in content) is visible
    assert (b'id="scale-form"' in content) is visible
    assert (b'id="spec-form"' in content) is visible


@pytest.mark.parametrize(
    ("page", "marker", "allowed"),
    [
        ("models", b'id="model-register"', {"operator", "admin", "owner"}),
        ("keys", b'id="key-create"', {"operator", "admin", "owner"}),
        ("members", b'id="member-add"', {"admin", "owner"}),
        ("playground", b'id="playground-key"', {"operator", "admin", "owner"}),
        ("overview", b'data-action="new-deployment"', {"operator", "admin", "owner"}),
    ],
)
@pytest.mark.parametrize("role", ROLES)
def test_forms_shown_only_to_those_allowed(
    login: Any, team: dict[str, Any], role: str, page: str, marker: bytes, allowed: set[str]
) -> None:
    content = login(team[role]).get(reverse(f"dashboard:{page}")).content
    assert (marker in content) is (role in allowed)


# ----------------------------------------------------------------------------- POSTs enforced per role


def _post_everything(client: Any, team: dict[str, Any]) -> dict[str, int]:
    d = team["deployment"]
    key = ApiKey.objects.create(tenant=team["tenant"], name="k", key_id="x" * 12, digest="0" * 64, display_prefix="p")
    member = Membership.objects.get(user=team["viewer"])
    urls = {
        "model-register": (reverse("dashboard:models"), {"name": "m", "source": "/nonexistent"}),
        "deployment-new": (reverse("dashboard:deployment-new"), {"name": "x"}),
        "scale": (reverse("dashboard:deployment-scale", args=[d.pk]), {"replicas": 1}),
        "stop": (reverse("dashboard:deployment-stop", args=[d.pk]), {}),
        "start": (reverse("dashboard:deployment-start", args=[d.pk]), {}),
        "restart": (reverse("dashboard:deployment-restart", args=[d.pk]), {}),
        "spec": (reverse("dashboard:deployment-spec", args=[d.pk]), {}),
        "delete": (reverse("dashboard:deployment-delete", args=[d.pk]), {"confirm": "nope"}),
        "key-create": (reverse("dashboard:keys"), {"name": ""}),
        "key-revoke": (reverse("dashboard:key-revoke", args=[key.pk]), {}),
        "member-add": (reverse("dashboard:members"), {"username": "nobody", "role": "viewer"}),
        "member-role": (reverse("dashboard:member-role", args=[member.pk]), {f"m{member.pk}-role": "viewer"}),
        "playground-key": (reverse("dashboard:playground-key"), {}),
    }
    return {name: client.post(url, data).status_code for name, (url, data) in urls.items()}


OPERATOR_ACTIONS = {
    "model-register",
    "deployment-new",
    "scale",
    "stop",
    "start",
    "restart",
    "spec",
    "delete",
    "key-create",
    "key-revoke",
    "playground-key",
}
ADMIN_ACTIONS = OPERATOR_ACTIONS | {"member-add", "member-role"}


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("viewer", set()), ("operator", OPERATOR_ACTIONS), ("admin", ADMIN_ACTIONS), ("owner", ADMIN_ACTIONS)],
)
def test_posts_are_enforced_per_role(login: Any, team: dict[str, Any], role: str, allowed: set[str]) -> None:
    statuses = _post_everything(login(team[role]), team)
    for action, status in statuses.items():
        if action in allowed:
            assert status != 403, (action, status)
        else:
            assert status == 403, (action, status)


def test_viewer_changes_nothing(login: Any, team: dict[str, Any]) -> None:
    client = login(team["viewer"])  # signing in is audited; what follows must add nothing
    before = AuditLog.objects.count()
    _post_everything(client, team)
    assert AuditLog.objects.count() == before
    d = Deployment.objects.get(pk=team["deployment"].pk)
    assert d.desired_state == DesiredState.RUNNING
    assert d.generation == 1


# ----------------------------------------------------------------------------- writes and validation errors


def test_register_model_shows_field_errors_then_succeeds(login: Any, team: dict[str, Any], tiny_model_dir: Any) -> None:
    client = login(team["operator"])
    bad = client.post(reverse("dashboard:models"), {"name": "tiny", "source": "relative/path"})
    assert bad.status_code == 400
    assert b'data-field-error="source"' in bad.content
    assert b"Give an absolute directory path or a file://, s3:// or hf:// URI." in bad.content
    missing = client.post(reverse("dashboard:models"), {"source": str(tiny_model_dir)})
    assert b'data-field-error="name"' in missing.content
    ok = client.post(
        reverse("dashboard:models"), {"name": "tiny", "source": str(tiny_model_dir), "dtype_options": ["float32"]}
    )
    assert ok.status_code == 302
    model = Model.objects.get(tenant=team["tenant"], name="tiny")
    detail = client.get(ok["Location"])
    assert b"float32" in detail.content and b'id="memory-estimate"' in detail.content
    assert model.parameter_count > 0
    # The tiny model is the demo's random-weight model: its page says so, so gibberish is expected.
    assert model.random_weights and model.task == "generate"
    assert b"data-random-weights" in detail.content and b"not a fault" in detail.content
    dup = client.post(reverse("dashboard:models"), {"name": "tiny", "source": str(tiny_model_dir)})
    assert b"exists" in dup.content and dup.status_code == 400


def test_register_an_embedding_model_from_the_dashboard(login: Any, team: dict[str, Any], tiny_model_dir: Any) -> None:
    client = login(team["operator"])
    data = {"name": "emb", "source": str(tiny_model_dir), "task": "embed", "pooling": "last"}
    assert client.post(reverse("dashboard:models"), data).status_code == 302
    model = Model.objects.get(tenant=team["tenant"], name="emb")
    assert (model.task, model.pooling) == ("embed", "last")
    listing = client.get(reverse("dashboard:models")).content
    assert b"data-embedding-model" in listing
    bad = client.post(reverse("dashboard:models"), {"name": "g", "source": str(tiny_model_dir), "pooling": "last"})
    assert bad.status_code == 400 and b'data-field-error="pooling"' in bad.content


def test_model_detail_says_which_targets_fit(login: Any, team: dict[str, Any]) -> None:
    model = ModelFactory(tenant=team["tenant"], parameter_count=7_000_000_000)
    TargetFactory(tenant=team["tenant"], name="big", gpu_inventory=[{"id": "0", "memory_mb": 81920}])
    TargetFactory(tenant=team["tenant"], name="pair", gpu_inventory=[{"id": "0", "memory_mb": 12288}] * 2)
    content = login(team["viewer"]).get(reverse("dashboard:model-detail", args=[model.pk])).content.decode()
    assert "fits on 1 GPU" in content  # float16 (≈17 GB) on an 80 GB card; int8 (≈9 GB) on 12 GiB
    # float16 on 2×12 GiB would need both cards: a replica uses one GPU (no sharding), so it does not fit.
    assert "does not fit on one GPU" in content
    assert "tensor parallel" not in content and "fits on 2" not in content


@pytest.mark.parametrize("role", ROLES)
def test_tenant_roles_see_granted_targets_without_connection_settings(
    login: Any, team: dict[str, Any], role: str
) -> None:
    target = TargetFactory(
        tenant=team["tenant"],
        name="gpu-box",
        kind="docker",
        docker_url="tcp://10.0.0.5:2376",
        publish_host="10.0.0.5",
        gpu_inventory=[{"id": "0", "name": "L4", "memory_mb": 23034}],
        health={"reachable": False, "status": "unreachable", "reason": "connection refused"},
    )
    TargetFactory(tenant=TenantFactory(), name="not-ours")
    client = login(team[role])
    listing = client.get(reverse("dashboard:targets")).content
    detail = client.get(reverse("dashboard:target-detail", args=[target.pk])).content
    for content in (listing, detail):
        assert b"gpu-box" in content and b"Docker host" in content and b"connection refused" in content
        assert b"10.0.0.5" not in content and b"tcp://" not in content  # connection settings stay hidden
        assert b'id="target-add"' not in content and b"platform/targets" not in content
    assert b"not-ours" not in listing
    assert b"22.5" in listing and b"L4" in detail  # capacity: GPUs and their memory


def test_tenant_roles_cannot_add_or_check_targets(login: Any, team: dict[str, Any]) -> None:
    client = login(team["owner"])
    before = Target.objects.count()
    client.post(reverse("dashboard:targets"), {"name": "t", "kind": "local"})
    assert Target.objects.count() == before
    target_id = team["deployment"].target_id
    for suffix in ("check/", "delete/"):
        assert client.post(f"/targets/{target_id}/{suffix}").status_code == 404
    assert Target.objects.filter(pk=target_id).exists()


def test_create_deployment_and_errors(login: Any, team: dict[str, Any]) -> None:
    client = login(team["operator"])
    model = ModelFactory(tenant=team["tenant"], name="llm")
    target = TargetFactory(tenant=team["tenant"])
    base = {
        "model": model.pk,
        "target": target.pk,
        "replicas": 1,
        "min_replicas": 1,
        "max_replicas": 2,
        "gpus": 0,
        "cpus": 1,
        "memory_mb": 1024,
        "dtype": "float32",
        "quantization": "none",
        "max_batch_size": 8,
        "max_model_len": 512,
        "max_tokens_cap": 256,
        "target_concurrency": 4,
        "scale_to_zero_idle_seconds": 0,
    }
    bad = client.post(reverse("dashboard:deployment-new"), base | {"name": "Bad Name", "max_tokens_cap": 4096})
    assert bad.status_code == 400
    assert b'data-field-error="name"' in bad.content
    too_many = client.post(reverse("dashboard:deployment-new"), base | {"name": "ok", "replicas": 5})
    assert b'data-field-error="replicas"' in too_many.content
    ok = client.post(reverse("dashboard:deployment-new"), base | {"name": "chat"})
    assert ok.status_code == 302
    deployment = Deployment.objects.get(tenant=team["tenant"], name="chat")
    assert deployment.served_model_name == "llm"
    foreign = ModelFactory()  # another tenant's model is not a choice
    sneaky = client.post(reverse("dashboard:deployment-new"), base | {"name": "sneaky", "model": foreign.pk})
    assert b'data-field-error="model"' in sneaky.content


def test_scale_spec_and_actions(login: Any, team: dict[str, Any]) -> None:
    d = team["deployment"]
    client = login(team["operator"])
    too_big = client.post(reverse("dashboard:deployment-scale", args=[d.pk]), {"replicas": 9})
    assert too_big.status_code == 400
    assert b"Must not exceed max_replicas" in too_big.content
    spec = {"replicas": 1, "min_replicas": 1, "max_replicas": 3, "gpus": 0, "cpus": 1, "memory_mb": 1024}
    spec |= {"dtype": "float32", "quantization": "none", "max_batch_size": 8, "max_model_len": 64}
    spec |= {"max_tokens_cap": 128, "target_concurrency": 4, "scale_to_zero_idle_seconds": 0}
    bad_spec = client.post(reverse("dashboard:deployment-spec", args=[d.pk]), spec)
    assert bad_spec.status_code == 400
    assert b'data-field-error="max_tokens_cap"' in bad_spec.content
    assert (
        client.post(reverse("dashboard:deployment-spec", args=[d.pk]), spec | {"max_tokens_cap": 32}).status_code == 302
    )
    assert client.post(reverse("dashboard:deployment-scale", args=[d.pk]), {"replicas": 3}).status_code == 302
    d.refresh_from_db()
    assert (d.replicas, d.max_replicas, d.max_tokens_cap) == (3, 3, 32)
    assert client.post(reverse("dashboard:deployment-stop", args=[d.pk])).status_code == 302
    d.refresh_from_db()
    assert d.desired_state == DesiredState.STOPPED
    assert client.post(reverse("dashboard:deployment-start", args=[d.pk])).status_code == 302
    assert client.post(reverse("dashboard:deployment-restart", args=[d.pk])).status_code == 302
    d.refresh_from_db()
    assert d.desired_state == DesiredState.RUNNING and d.template_generation == 3
    page = client.get(reverse("dashboard:deployment-detail", args=[d.pk])).content
    assert b"RestartRequested" in page and b"StopRequested" in page  # the event timeline
    assert AuditLog.objects.filter(action="deployment.restart", source_ip="127.0.0.1").exists()


def test_delete_needs_the_name_typed(login: Any, team: dict[str, Any]) -> None:
    d = team["deployment"]
    client = login(team["operator"])
    assert client.get(reverse("dashboard:deployment-delete", args=[d.pk])).status_code == 200
    wrong = client.post(reverse("dashboard:deployment-delete", args=[d.pk]), {"confirm": "other"})
    assert wrong.status_code == 400
    assert b'data-field-error="confirm"' in wrong.content
    ok = client.post(reverse("dashboard:deployment-delete", args=[d.pk]), {"confirm": d.name})
    assert ok.status_code == 302
    d.refresh_from_db()
    assert d.desired_state == DesiredState.DELETED


def test_api_key_secret_is_shown_once(login: Any, team: dict[str, Any]) -> None:
    client = login(team["operator"])
    bad = client.post(reverse("dashboard:keys"), {"name": "", "scopes": ["inference"]})
    assert bad.status_code == 400 and b'data-field-error="name"' in bad.content
    past = client.post(
        reverse("dashboard:keys"),
        {
            "name": "old",
            "scopes": ["inference"],
            "rpm_limit": 0,
            "tpm_limit": 0,
            "monthly_token_budget": 0,
            "expires_at": "2001-01-01T00:00",
        },
    )
    assert b'data-field-error="expires_at"' in past.content
    created = client.post(
        reverse("dashboard:keys"),
        {
            "name": "ci",
            "scopes": ["inference"],
            "rpm_limit": 60,
            "tpm_limit": 0,
            "monthly_token_budget": 0,
            "burst_percent": 25,
            "allowed_models": [team["deployment"].served_model_name],
        },
    )
    assert created.status_code == 201
    assert created["Cache-Control"] == "no-store"
    secret = created.context["secret"]
    assert secret.startswith("hgr_") and secret.encode() in created.content
    key = ApiKey.objects.get(name="ci")
    assert key.rpm_limit == 60 and key.allowed_models == [team["deployment"].served_model_name]
    assert key.burst_percent == 25  # the explicit burst allowance, shown in the list
    listing = client.get(reverse("dashboard:keys")).content
    assert secret.encode() not in listing and key.display_prefix.encode() in listing
    assert b"60 rpm +25% burst" in listing
    assert client.post(reverse("dashboard:key-revoke", args=[key.pk])).status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert b"revoked" in client.get(reverse("dashboard:keys")).content


def test_playground_key_is_short_lived_and_shown_once(login: Any, team: dict[str, Any]) -> None:
    client = login(team["operator"])
    response = client.post(reverse("dashboard:playground-key"))
    assert response.status_code == 201
    key = ApiKey.objects.get(tenant=team["tenant"])
    assert key.scopes == ["inference"]
    assert timedelta(minutes=50) < key.expires_at - timezone.now() <= timedelta(hours=1)
    assert response.context["secret"].encode() in response.content
    assert response.context["secret"].encode() not in client.get(reverse("dashboard:playground")).content
    page = client.get(reverse("dashboard:playground")).content
    assert b'data-endpoint="/v1/chat/completions"' in page


def test_members_and_roles(login: Any, team: dict[str, Any]) -> None:
    newcomer = UserFactory(username="newcomer")
    client = login(team["admin"])
    unknown = client.post(reverse("dashboard:members"), {"username": "ghost", "role": "viewer"})
    assert unknown.status_code == 400 and b"No user with this name." in unknown.content
    above = client.post(reverse("dashboard:members"), {"username": "newcomer", "role": "owner"})
    assert above.status_code == 400 and b"above your own" in above.content
    assert client.post(reverse("dashboard:members"), {"username": "newcomer", "role": "operator"}).status_code == 302
    membership = Membership.objects.get(user=newcomer, tenant=team["tenant"])
    assert membership.role == "operator"
    url = reverse("dashboard:member-role", args=[membership.pk])
    assert client.post(url, {f"m{membership.pk}-role": "viewer"}).status_code == 302
    membership.refresh_from_db()
    assert membership.role == "viewer"
    owner = Membership.objects.get(user=team["owner"])
    denied = client.post(reverse("dashboard:member-remove", args=[owner.pk]))
    assert denied.status_code == 400 and b"data-row-error" in denied.content
    assert client.post(reverse("dashboard:member-remove", args=[membership.pk])).status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_usage_table_chart_and_csv(login: Any, team: dict[str, Any]) -> None:
    key = ApiKey.objects.create(
        tenant=team["tenant"], name="=cmd", key_id="y" * 12, digest="0" * 64, display_prefix="hgr_y…"
    )
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes, tokens in [(0, 10), (1, 20), (60 * 24, 5)]:
        UsageRecordFactory(
            tenant=team["tenant"],
            api_key=key,
            model="chat",
            minute=now - timedelta(minutes=minutes),
            requests=1,
            prompt_tokens=tokens,
            completion_tokens=tokens,
        )
    UsageRecordFactory(model="chat", minute=now, requests=99, prompt_tokens=999, completion_tokens=0)
    client = login(team["viewer"])
    page = client.get(reverse("dashboard:usage"))
    assert page.status_code == 200
    rows = page.context["rows"]
    assert sum(r["requests"] for r in rows) == 3  # the other tenant's usage is not counted
    assert len(page.context["bars"]) == 2
    csv_response = client.get(reverse("dashboard:usage-csv"), {"days": 30})
    body = csv_response.content.decode()
    assert csv_response["Content-Type"].startswith("text/csv")
    assert body.splitlines()[0].startswith("day,api_key")
    assert "'=cmd" in body  # formula injection defused
    assert "999" not in body
    bad = client.get(reverse("dashboard:usage"), {"days": "0"})
    assert bad.status_code == 400 and b'data-field-error="days"' in bad.content
    keys_page = client.get(reverse("dashboard:keys")).content
    assert b">3<" in keys_page  # requests per key in the keys table


def test_audit_filters(login: Any, team: dict[str, Any]) -> None:
    client = login(team["operator"])
    client.post(reverse("dashboard:deployment-stop", args=[team["deployment"].pk]))
    client.post(reverse("dashboard:playground-key"))
    admin = login(team["admin"])
    everything = admin.get(reverse("dashboard:audit")).context["entries"]
    assert {e.action for e in everything} >= {"deployment.stop", "apikey.create"}
    only_stop = admin.get(reverse("dashboard:audit"), {"action": "deployment.stop"}).context["entries"]
    assert [e.action for e in only_stop] == ["deployment.stop"]
    bad = admin.get(reverse("dashboard:audit"), {"since": "yesterday-ish"})
    assert bad.status_code == 400 and b'data-field-error="since"' in bad.content


def test_overview_shows_live_figures(login: Any, team: dict[str, Any]) -> None:
    d = team["deployment"]
    now = timezone.now()
    common = {"tenant": team["tenant"], "deployment": d}
    MetricSample.objects.create(**common, ts=now - timedelta(seconds=2), requests_total=100, errors_total=0)
    MetricSample.objects.create(
        **common, ts=now, requests_total=200, errors_total=25, tokens_per_second=123.4, latency_p50=0.2
    )
    page = login(team["viewer"]).get("/")
    content = page.content.decode()
    assert "123.4" in content and "25%" in content
    detail = login(team["viewer"]).get(reverse("dashboard:deployment-detail", args=[d.pk]))
    assert detail.context["chart_data"]["tokens_per_second"] == [0.0, 123.4]
    assert b'id="chart-data"' in detail.content


def test_log_tail_partial(login: Any, team: dict[str, Any], monkeypatch: Any) -> None:
    from console.dashboard.views import deployments as views

    def fake_logs(*, access: Any, replica_id: int, tail: int) -> str:
        assert access.can(team["tenant"].pk, "deployment.view")
        return f"line from replica {replica_id}\n<b>"

    monkeypatch.setattr(views, "replica_logs", fake_logs)
    content = login(team["viewer"]).get(reverse("dashboard:deployment-logs", args=[team["deployment"].pk])).content
    assert f"line from replica {team['replica'].pk}".encode() in content
    assert b"&lt;b&gt;" in content  # escaped


def test_only_a_platform_admin_may_allow_remote_code_from_the_dashboard(make_member: Any, tiny_model_dir: Any) -> None:
    from django.test import Client

    owner = make_member("owner")
    client = Client()
    client.force_login(owner)
    risky = {"name": "risky", "source": str(tiny_model_dir), "dtype_options": ["float32"], "trust_remote_code": "on"}
    response = client.post("/models/", risky)
    assert response.status_code == 400
    assert b"Only platform admins may allow unsafe weights or trust remote code." in response.content
    assert not Model.objects.filter(name="risky").exists()

    owner.is_superuser = True  # a platform admin who also owns the tenant
    owner.save()
    assert client.post("/models/", risky).status_code == 302
    assert Model.objects.get(name="risky").trust_remote_code
