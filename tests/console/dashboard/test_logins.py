"""The login door: lockout after repeated failures (per user name and per address), the page
saying until when, every login and failure audited, TOTP for platform admins, /admin/login/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from controlplane.audit.models import AuditLog
from controlplane.tenancy.choices import Role
from tests.controlplane.api_mixins import rows
from tests.factories import MembershipFactory, PlatformAdminFactory, UserFactory
from tests.support.logins import log_in

pytestmark = pytest.mark.django_db
PASSWORD = "pw-for-tests-1"
LIMIT = 3


@pytest.fixture(autouse=True)
def _limits(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT
    settings.AXES_COOLOFF_TIME = 0.25  # hours: 15 minutes


def fail(client: Client, username: str, address: str = "10.0.0.1") -> Any:
    return client.post("/login/", {"username": username, "password": "wrong"}, REMOTE_ADDR=address)


def test_brute_force_on_a_user_is_locked_out_and_audited(team: dict[str, Any]) -> None:
    owner = team["owner"]
    client = Client()
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(LIMIT - 1):
            response = fail(client, owner.username)
            assert response.status_code == 200 and b"Please enter a correct username and password" in response.content
        locked = fail(client, owner.username)
        assert locked.status_code == 429
        assert locked["Retry-After"] == str(15 * 60)
        page = locked.content.decode()
        until = (start + timedelta(minutes=15)).strftime("%Y-%m-%d %H:%M:%S")
        assert "locked until" in page and until in page
        # The right password does not open a locked account, from anywhere.
        refused = Client().post("/login/", {"username": owner.username, "password": PASSWORD}, REMOTE_ADDR="10.9.9.9")
        assert refused.status_code == 429 and "_auth_user_id" not in refused.client.session
    failed = AuditLog.objects.filter(action="login.failed", subject_user=owner)
    assert failed.count() == LIMIT - 1
    assert {row.changes["path"] for row in failed} == {"/login/"}
    assert all(row.source_ip == "10.0.0.1" and row.tenant_id is None for row in failed)
    assert AuditLog.objects.filter(action="login.locked_out", subject_user=owner).count() == 2
    assert "wrong" not in str(list(AuditLog.objects.values_list("changes", flat=True)))

    with time_machine.travel(start + timedelta(minutes=16), tick=False):
        assert log_in(Client(), owner.username, PASSWORD, REMOTE_ADDR="10.9.9.9")
    login = AuditLog.objects.get(action="login", subject_user=owner)
    assert login.actor_id == owner.pk and login.source_ip == "10.9.9.9"


def test_one_address_trying_many_users_is_locked_out(team: dict[str, Any]) -> None:
    client = Client()
    for role in ("viewer", "operator", "admin"):
        response = fail(client, team[role].username, address="10.6.6.6")
    assert response.status_code == 429
    # Another user's right password from that address is refused too; from elsewhere it works.
    assert not log_in(Client(), team["owner"].username, PASSWORD, REMOTE_ADDR="10.6.6.6")
    assert log_in(Client(), team["owner"].username, PASSWORD, REMOTE_ADDR="10.7.7.7")


def test_unknown_users_are_audited_for_platform_admins_only(team: dict[str, Any], client_for: Any) -> None:
    fail(Client(), "nobody-here")
    row = AuditLog.objects.get(action="login.failed")
    assert row.subject_user_id is None and row.changes["username"] == "nobody-here"
    auditor = client_for(team["admin"])
    assert rows(auditor.get("/api/v1/audit/", {"action": "login.failed"})) == []
    platform = client_for(PlatformAdminFactory())
    assert [r["object_repr"] for r in rows(platform.get("/api/v1/audit/", {"action": "login.failed"}))] == [
        "nobody-here"
    ]


def test_logins_are_shown_to_the_users_tenant_auditors(team: dict[str, Any], client_for: Any) -> None:
    viewer = team["viewer"]
    fail(Client(), viewer.username)
    assert log_in(Client(), viewer.username, PASSWORD)
    seen = rows(client_for(team["admin"]).get("/api/v1/audit/", {"object_id": str(viewer.pk)}))
    assert {r["action"] for r in seen} >= {"login", "login.failed"}
    assert client_for(team["operator"]).get("/api/v1/audit/").status_code == 403
    outsider = UserFactory()
    MembershipFactory(user=outsider, role=Role.OWNER)
    assert rows(client_for(outsider).get("/api/v1/audit/", {"action": "login"})) == []


def test_admin_login_is_the_same_door() -> None:
    response = Client().get("/admin/login/?next=/admin/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/admin/"
    # Posting a password there reaches no authentication at all.
    user = UserFactory(is_staff=True, is_superuser=True)
    posted = Client().post("/admin/login/", {"username": user.username, "password": PASSWORD})
    assert posted.status_code == 302 and not AuditLog.objects.filter(action="login").exists()


# ----------------------------------------------------------------------------- TOTP


def test_a_platform_admin_turns_on_totp_and_then_needs_codes() -> None:
    admin = PlatformAdminFactory()
    client = Client()
    assert log_in(client, admin.username, PASSWORD)
    page = client.get("/account/security/")
    assert page.status_code == 200 and b'data-otp-state="off"' in page.content
    started = client.post("/account/security/", {"action": "start"})
    assert b'data-otp-state="pending"' in started.content and b"<svg" in started.content
    device = TOTPDevice.objects.get(user=admin)
    assert client.post("/account/security/", {"action": "confirm", "otp_token": "000000"}).status_code == 400
    code = f"{totp(device.bin_key):06d}"
    assert client.post("/account/security/", {"action": "confirm", "otp_token": code}).status_code == 302
    assert TOTPDevice.objects.get(user=admin).confirmed
    assert AuditLog.objects.filter(action="user.otp_enable", subject_user=admin).exists()

    # The password alone no longer signs in (and counts as a failure); with a code it does.
    assert not log_in(Client(), admin.username, PASSWORD)
    assert AuditLog.objects.get(action="login.failed", subject_user=admin).changes["reason"] == "otp"
    with time_machine.travel(timezone.now() + timedelta(seconds=60)):  # a fresh code (each is used once)
        fresh = f"{totp(TOTPDevice.objects.get(user=admin).bin_key):06d}"
        signed_in = Client()
        assert log_in(signed_in, admin.username, PASSWORD, otp_token=fresh)
    logins = AuditLog.objects.filter(action="login", subject_user=admin).order_by("id")
    assert [row.changes["second_factor"] for row in logins] == [False, True]


def test_the_security_page_is_for_platform_admins(team: dict[str, Any], login: Any) -> None:
    assert login(team["owner"]).get("/account/security/").status_code == 404


def test_platform_admins_read_logins_on_the_platform_audit_page(team: dict[str, Any], login: Any) -> None:
    fail(Client(), team["viewer"].username)
    fail(Client(), "nobody-here")
    page = login(PlatformAdminFactory()).get("/platform/audit/", {"action": "login.failed"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "nobody-here" in text and team["viewer"].username in text
    assert login(team["owner"]).get("/platform/audit/").status_code == 404
