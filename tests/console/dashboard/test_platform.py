"""The dashboard's Platform section: targets (with write-only credentials), grants, tenants,
quotas and users. It exists for platform admins only; for everyone else every page is a 404."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane.audit.models import AuditLog
from controlplane.core.context import SYSTEM
from controlplane.deployments.models import Target, TargetGrant
from controlplane.deployments.selectors import target_credentials
from controlplane.deployments.services import target_create
from controlplane.tenancy.access import is_platform_admin
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership, Tenant
from tests.console.dashboard.conftest import ROLES
from tests.factories import DeploymentFactory, MembershipFactory, PlatformAdminFactory, TargetFactory, UserFactory
from tests.support.credentials import SECRET, docker_tls, kubeconfig, ssh_private_key
from tests.support.logins import log_in

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-1"


def form_errors(response: Any) -> list[str]:
    """The errors a form page shows, for assertion messages."""
    return re.findall(r'<ul class="errorlist"([^>]*)>(.*?)</ul>', response.content.decode(), re.S)


def edit_form(target: Target, **changes: Any) -> dict[str, Any]:
    """What the edit form posts: every setting as shown (the kind is disabled), plus ``changes``."""
    target.refresh_from_db()
    fields = ("name", "docker_url", "publish_host", "kube_auth", "kube_context", "kube_namespace")
    data: dict[str, Any] = {name: getattr(target, name) for name in fields}
    for name in ("model_volume", "node_selector", "tolerations", "labels", "gpu_inventory"):
        data[name] = json.dumps(getattr(target, name))
    return data | changes


@pytest.fixture
def admin() -> Any:
    return PlatformAdminFactory(username="platform-admin")


@pytest.fixture
def as_admin(admin: Any) -> Client:
    client = Client()
    client.force_login(admin)
    return client


def platform_pages(team: dict[str, Any]) -> list[str]:
    target, tenant = team["deployment"].target, team["tenant"]
    return [
        reverse("dashboard:platform"),
        reverse("dashboard:platform-targets"),
        reverse("dashboard:platform-target", args=[target.pk]),
        reverse("dashboard:platform-tenants"),
        reverse("dashboard:platform-tenant", args=[tenant.pk]),
        reverse("dashboard:platform-users"),
        reverse("dashboard:platform-audit"),
    ]


def platform_posts(team: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    target, tenant, user = team["deployment"].target, team["tenant"], team["viewer"]
    grant = TargetGrant.objects.get(target=target, tenant=tenant)
    return [
        (reverse("dashboard:platform-targets"), {"name": "sneaky", "kind": "local"}),
        (reverse("dashboard:platform-target", args=[target.pk]), {"name": "renamed"}),
        (reverse("dashboard:platform-target-check", args=[target.pk]), {}),
        (reverse("dashboard:platform-target-delete", args=[target.pk]), {}),
        (reverse("dashboard:platform-target-grant", args=[target.pk]), {"tenant": tenant.slug}),
        (reverse("dashboard:platform-target-revoke", args=[target.pk, grant.pk]), {}),
        (reverse("dashboard:platform-tenants"), {"name": "Mine", "rpm_limit": 0, "tpm_limit": 0}),
        (reverse("dashboard:platform-tenant", args=[tenant.pk]), {"settings-name": "x"}),
        (reverse("dashboard:platform-tenant-quota", args=[tenant.pk]), {"quota-gpus": 99}),
        (reverse("dashboard:platform-tenant-deactivate", args=[tenant.pk]), {}),
        (reverse("dashboard:platform-tenant-activate", args=[tenant.pk]), {}),
        (reverse("dashboard:platform-users"), {"username": "sneaky"}),
        *[
            (reverse(f"dashboard:platform-user-{action}", args=[user.pk]), {"value": "1"})
            for action in ("deactivate", "activate", "reset-password", "platform-admin")
        ],
    ]


# ----------------------------------------------------------------------------- who sees it


def test_every_page_renders_for_a_platform_admin(as_admin: Client, team: dict[str, Any]) -> None:
    for url in platform_pages(team):
        response = as_admin.get(url, follow=True)
        assert response.status_code == 200, url
        assert b"data-platform-nav" in response.content and b'data-nav="platform"' in response.content


@pytest.mark.parametrize("role", ROLES)
def test_every_page_and_action_is_404_for_tenant_roles(login: Any, team: dict[str, Any], role: str) -> None:
    client = login(team[role])
    assert b'data-nav="platform"' not in client.get("/").content  # not in the navigation either
    for url in platform_pages(team):
        assert client.get(url).status_code == 404, url
    before = AuditLog.objects.count()
    for url, data in platform_posts(team):
        assert client.post(url, data).status_code == 404, url
    assert AuditLog.objects.count() == before
    assert not Tenant.objects.filter(name="Mine").exists() and Target.objects.filter(name="renamed").count() == 0
    assert get_user_model().objects.get(pk=team["viewer"].pk).check_password(PASSWORD)


def test_staff_without_the_permission_gets_404(client: Client, team: dict[str, Any]) -> None:
    client.force_login(UserFactory(is_staff=True))
    for url in platform_pages(team):
        assert client.get(url).status_code == 404, url


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, team: dict[str, Any]) -> None:
    response = client.get(reverse("dashboard:platform-users"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_a_platform_admin_without_a_tenant_lands_on_the_platform(as_admin: Client) -> None:
    response = as_admin.get("/")
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:platform")
    page = as_admin.get(reverse("dashboard:platform-tenants")).content
    assert b"platform admin" in page and b'id="tenant-switch"' not in page


def test_a_platform_admin_in_a_tenant_has_both_navigations(admin: Any, as_admin: Client, team: dict[str, Any]) -> None:
    MembershipFactory(user=admin, tenant=team["tenant"], role=Role.VIEWER)
    content = as_admin.get("/").content
    assert b'data-nav="platform"' in content and b'id="tenant-switch"' in content
    assert b'id="tenant-switch"' in as_admin.get(reverse("dashboard:platform-users")).content


# ----------------------------------------------------------------------------- targets


def test_add_targets_with_field_errors_then_success(as_admin: Client) -> None:
    url = reverse("dashboard:platform-targets")
    bad = as_admin.post(url, {"name": "d", "kind": "docker", "docker_url": "ftp://x"})
    assert bad.status_code == 400 and b'data-field-error="docker_url"' in bad.content
    bad_json = as_admin.post(url, {"name": "d", "kind": "docker", "gpu_inventory": "{"})
    assert b'data-field-error="gpu_inventory"' in bad_json.content
    k8s = as_admin.post(
        url, {"name": "cluster", "kind": "kubernetes", "kube_auth": "in_cluster", "kube_namespace": "Bad_NS"}
    )
    assert b'data-field-error="kube_namespace"' in k8s.content
    ok = as_admin.post(
        url,
        {
            "name": "cluster",
            "kind": "kubernetes",
            "kube_auth": "in_cluster",
            "kube_namespace": "llm",
            "gpu_inventory": '[{"id": "0", "name": "L4", "memory_mb": 23034}]',
        },
    )
    assert ok.status_code == 302, form_errors(ok)
    target = Target.objects.get(name="cluster")
    assert target.kube_namespace == "llm" and target.gpu_inventory[0]["name"] == "L4"
    detail = as_admin.get(ok["Location"]).content
    assert b"L4" in detail and b"22.5" in detail
    assert b"cluster" in as_admin.get(url).content


def test_credentials_are_write_only_even_when_the_form_comes_back_with_errors(as_admin: Client) -> None:
    tls = docker_tls()
    url = reverse("dashboard:platform-targets")
    # A valid key with a refused URL: the page comes back with errors but without the key.
    bad = as_admin.post(url, {"name": "box", "kind": "docker", "docker_url": "ftp://x", **tls})
    assert bad.status_code == 400 and b'data-field-error="docker_url"' in bad.content
    assert SECRET.encode() not in bad.content and b"PRIVATE KEY" not in bad.content
    # Browsers send textarea line breaks as CRLF; the stored PEM is the uploaded one.
    crlf = {k: v.replace("\n", "\r\n") for k, v in tls.items()}
    ok = as_admin.post(url, {"name": "box", "kind": "docker", "docker_url": "tcp://10.0.0.5:2376", **crlf})
    assert ok.status_code == 302, form_errors(ok)
    target = Target.objects.get(name="box")
    assert target_credentials(target) == tls
    detail = as_admin.get(ok["Location"]).content
    assert SECRET.encode() not in detail and b"PRIVATE KEY" not in detail and b"BEGIN CERTIFICATE" not in detail
    stored = re.search(rb'data-testid="stored-credentials">(.*?)</dd>', detail, re.S)
    assert stored and all(name.encode() in stored.group(1) for name in tls)
    assert b'name="clear_tls_key"' in detail
    rows = AuditLog.objects.filter(object_type="target")
    assert rows.exists() and all(SECRET not in str(row.changes) for row in rows)


def test_edit_keeps_blank_credentials_and_replaces_uploaded_ones(as_admin: Client) -> None:
    target = target_create(
        actor=SYSTEM, data={"name": "k8s", "kind": "kubernetes", "kube_auth": "kubeconfig", "kubeconfig": kubeconfig()}
    )
    old = target_credentials(target)["kubeconfig"]
    url = reverse("dashboard:platform-target", args=[target.pk])
    saved = as_admin.post(url, edit_form(target, kube_context="prod", kube_namespace="team-a"))
    assert saved.status_code == 302, form_errors(saved)
    target.refresh_from_db()
    assert target.kube_namespace == "team-a" and target_credentials(target)["kubeconfig"] == old  # kept
    new = kubeconfig()
    assert as_admin.post(url, edit_form(target, kubeconfig=new)).status_code == 302
    target.refresh_from_db()
    assert target_credentials(target)["kubeconfig"] == new != old
    assert SECRET.encode() not in as_admin.get(url).content
    # The kind is fixed: a forged value is ignored (the field is disabled).
    as_admin.post(url, edit_form(target, kind="docker"))
    target.refresh_from_db()
    assert target.kind == "kubernetes"


def test_removing_a_stored_credential(as_admin: Client) -> None:
    target = target_create(
        actor=SYSTEM,
        data={"name": "ssh-box", "kind": "docker", "docker_url": "ssh://hangar@10.0.0.6", "ssh_key": ssh_private_key()},
    )
    url = reverse("dashboard:platform-target", args=[target.pk])
    # The key is required by the ssh:// URL: removing it is refused, next to the field.
    refused = as_admin.post(url, edit_form(target, clear_ssh_key="on"))
    assert refused.status_code == 400 and b'data-field-error="ssh_key"' in refused.content
    moved = as_admin.post(url, edit_form(target, docker_url="unix:///var/run/docker.sock", clear_ssh_key="on"))
    assert moved.status_code == 302, form_errors(moved)
    target.refresh_from_db()
    assert target_credentials(target) == {}


def test_grant_with_namespace_and_revoke(as_admin: Client, team: dict[str, Any]) -> None:
    target = TargetFactory(name="shared-k8s", kind="kubernetes", kube_auth="in_cluster")
    tenant = team["tenant"]
    url = reverse("dashboard:platform-target-grant", args=[target.pk])
    bad = as_admin.post(url, {"tenant": tenant.slug, "namespace": "Not_A_Label"})
    assert bad.status_code == 400 and b'data-field-error="namespace"' in bad.content
    unknown = as_admin.post(url, {"tenant": "no-such-tenant"})
    assert unknown.status_code == 400 and b'data-field-error="tenant"' in unknown.content
    assert as_admin.post(url, {"tenant": tenant.slug, "namespace": "team-a"}).status_code == 302
    grant = TargetGrant.objects.get(target=target, tenant=tenant)
    assert grant.namespace == "team-a"
    page = as_admin.get(reverse("dashboard:platform-target", args=[target.pk])).content
    assert f'data-grant="{tenant.slug}"'.encode() in page and b"team-a" in page
    # The tenant now sees it (name, kind, health; not its settings).
    viewer = Client()
    viewer.force_login(team["viewer"])
    assert b"shared-k8s" in viewer.get(reverse("dashboard:targets")).content
    revoke = reverse("dashboard:platform-target-revoke", args=[target.pk, grant.pk])
    assert as_admin.post(revoke).status_code == 302
    assert not TargetGrant.objects.filter(pk=grant.pk).exists()
    assert b"shared-k8s" not in viewer.get(reverse("dashboard:targets")).content


def test_revoking_a_grant_in_use_says_why(as_admin: Client, team: dict[str, Any]) -> None:
    target = team["deployment"].target
    grant = TargetGrant.objects.get(target=target, tenant=team["tenant"])
    response = as_admin.post(reverse("dashboard:platform-target-revoke", args=[target.pk, grant.pk]))
    assert response.status_code == 409 and b"data-row-error" in response.content
    assert TargetGrant.objects.filter(pk=grant.pk).exists()
    other = TargetFactory(tenant=team["tenant"])
    other_grant = TargetGrant.objects.get(target=other)
    # A grant id under another target's URL is not found.
    assert (
        as_admin.post(reverse("dashboard:platform-target-revoke", args=[target.pk, other_grant.pk])).status_code == 404
    )


def test_check_and_delete(as_admin: Client, team: dict[str, Any]) -> None:
    target = TargetFactory(name="spare")
    assert as_admin.post(reverse("dashboard:platform-target-check", args=[target.pk])).status_code == 302
    assert AuditLog.objects.filter(action="target.check", object_id=str(target.pk)).exists()
    in_use = team["deployment"].target
    refused = as_admin.post(reverse("dashboard:platform-target-delete", args=[in_use.pk]), follow=True)
    assert b"Deployments still use this target" in refused.content
    assert as_admin.post(reverse("dashboard:platform-target-delete", args=[target.pk])).status_code == 302
    assert not Target.objects.filter(pk=target.pk).exists() and Target.objects.filter(pk=in_use.pk).exists()


# ----------------------------------------------------------------------------- tenants


def test_create_tenant_with_owner_and_errors(as_admin: Client) -> None:
    url = reverse("dashboard:platform-tenants")
    owner = UserFactory(username="olga")
    base = {"rpm_limit": 0, "tpm_limit": 0, "monthly_token_budget": 0}
    reserved = as_admin.post(url, base | {"name": "Shared", "slug": "_shared"})
    assert reserved.status_code == 400 and b'data-field-error="slug"' in reserved.content
    nobody = as_admin.post(url, base | {"name": "Acme", "owner": "nobody-here"})
    assert b'data-field-error="owner"' in nobody.content
    ok = as_admin.post(url, base | {"name": "Acme Labs", "owner": "olga", "tpm_limit": 5})
    assert ok.status_code == 302
    tenant = Tenant.objects.get(slug="acme-labs")
    assert tenant.tpm_limit == 5 and Membership.objects.get(tenant=tenant).user == owner
    assert b'data-tenant="acme-labs"' in as_admin.get(url).content


def test_tenant_settings_and_deactivation(as_admin: Client, team: dict[str, Any]) -> None:
    tenant = team["tenant"]
    url = reverse("dashboard:platform-tenant", args=[tenant.pk])
    bad = as_admin.post(url, {"settings-name": "", "settings-rpm_limit": -1})
    assert bad.status_code == 400 and b'data-field-error="rpm_limit"' in bad.content
    form = {
        "settings-name": "Renamed",
        "settings-rpm_limit": 60,
        "settings-tpm_limit": 0,
        "settings-monthly_token_budget": 0,
    }
    assert as_admin.post(url, form).status_code == 302
    tenant.refresh_from_db()
    assert tenant.name == "Renamed" and tenant.rpm_limit == 60 and tenant.burst_percent == 0
    assert as_admin.post(url, {**form, "settings-burst_percent": 101}).status_code == 400
    assert as_admin.post(url, {**form, "settings-burst_percent": 10}).status_code == 302
    tenant.refresh_from_db()
    assert tenant.burst_percent == 10
    assert b'name="settings-burst_percent" value="10"' in as_admin.get(url).content

    member = Client()
    member.force_login(team["owner"])
    assert member.get("/").status_code == 200
    assert as_admin.post(reverse("dashboard:platform-tenant-deactivate", args=[tenant.pk])).status_code == 302
    assert b"deactivated" in as_admin.get(url).content
    assert member.get("/").status_code == 403  # the tenant is gone for its members
    assert as_admin.post(reverse("dashboard:platform-tenant-activate", args=[tenant.pk])).status_code == 302
    assert member.get("/").status_code == 200


def test_quotas_form_and_usage_bars(as_admin: Client, team: dict[str, Any]) -> None:
    tenant = team["tenant"]  # the team's deployment: 1 replica, 1 CPU, 2048 MB, no GPU
    DeploymentFactory(tenant=tenant, gpus=1, replicas=2, max_replicas=2, cpus=0.25, memory_mb=256)
    quota_url = reverse("dashboard:platform-tenant-quota", args=[tenant.pk])
    bad = as_admin.post(quota_url, {"quota-gpus": -1})
    assert bad.status_code == 400 and b'data-field-error="gpus"' in bad.content
    assert as_admin.post(quota_url, {"quota-gpus": 4, "quota-cpus": "1.5", "quota-deployments": 0}).status_code == 302
    tenant.refresh_from_db()
    assert (tenant.quota_gpus, tenant.quota_cpus, tenant.quota_deployments, tenant.quota_memory_mb) == (4, 1.5, 0, None)
    content = as_admin.get(reverse("dashboard:platform-tenant", args=[tenant.pk])).content.decode()
    gpus = re.search(r'<div data-quota="gpus".*?</span>\s*</div>', content, re.S)
    assert gpus and "width: 50%" in gpus.group(0) and "2 / 4" in gpus.group(0)
    memory = re.search(r'<div data-quota="memory_mb".*?</span>\s*</div>', content, re.S)
    assert memory and "2560 / unlimited" in memory.group(0) and 'class="bar"' not in memory.group(0)
    deployments = re.search(r'<div data-quota="deployments".*?</span>\s*</div>', content, re.S)
    assert deployments and "var(--warn)" in deployments.group(0)  # 2 deployments, none allowed: full
    assert 'name="quota-gpus" value="4"' in content  # the form shows the limits as set


# ----------------------------------------------------------------------------- users


def test_create_user_shows_the_password_once(as_admin: Client) -> None:
    url = reverse("dashboard:platform-users")
    bad = as_admin.post(url, {"username": "bad name!", "password": "123"})
    assert bad.status_code == 400 and b'data-field-error="username"' in bad.content
    assert b'value="123"' not in bad.content
    created = as_admin.post(url, {"username": "nina", "email": "nina@example.com"})
    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    password = re.search(rb'data-testid="password">([^<]+)<', created.content).group(1).decode()
    assert log_in(Client(), "nina", password)
    assert password.encode() not in as_admin.get(url).content  # never again
    chosen = as_admin.post(url, {"username": "omar", "password": "a-long-chosen-passphrase-42"})
    assert chosen.status_code == 302  # nothing to show: the admin chose it
    assert get_user_model().objects.get(username="omar").check_password("a-long-chosen-passphrase-42")


def test_deactivate_reset_and_platform_admin(as_admin: Client, admin: Any, team: dict[str, Any]) -> None:
    user = team["owner"]
    session = Client()
    session.force_login(user)
    action = lambda name: reverse(f"dashboard:platform-user-{name}", args=[user.pk])  # noqa: E731

    assert as_admin.post(action("deactivate")).status_code == 302
    assert session.get("/").status_code == 302  # signed out
    assert b"deactivated" in as_admin.get(reverse("dashboard:platform-users")).content
    assert as_admin.post(action("activate")).status_code == 302

    reset = as_admin.post(action("reset-password"))
    assert reset.status_code == 200 and reset["Cache-Control"] == "no-store"
    password = re.search(rb'data-testid="password">([^<]+)<', reset.content).group(1).decode()
    assert log_in(Client(), user.username, password)
    assert not log_in(Client(), user.username, PASSWORD)

    assert as_admin.post(action("platform-admin"), {"value": "1"}).status_code == 302
    assert is_platform_admin(get_user_model().objects.get(pk=user.pk))
    assert as_admin.post(action("platform-admin"), {"value": "0"}).status_code == 302
    assert not is_platform_admin(get_user_model().objects.get(pk=user.pk))


def test_a_platform_admin_cannot_lock_themselves_out(as_admin: Client, admin: Any) -> None:
    page = as_admin.get(reverse("dashboard:platform-users")).content
    row = re.search(rb'<tr data-user="platform-admin">.*?</tr>', page, re.S).group(0)
    assert b"Deactivate" not in row and b"Remove platform admin" not in row  # no buttons for yourself
    forged = as_admin.post(reverse("dashboard:platform-user-deactivate", args=[admin.pk]))
    assert forged.status_code == 409 and b"data-row-error" in forged.content
    forged = as_admin.post(reverse("dashboard:platform-user-platform-admin", args=[admin.pk]), {"value": "0"})
    assert forged.status_code == 409
    assert is_platform_admin(get_user_model().objects.get(pk=admin.pk))
