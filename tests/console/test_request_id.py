"""Every answer of the REST API and dashboard carries a request id: the client's own when it is
safe to log, a new one otherwise; tasks enqueued by the request carry it too."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from controlplane.core import request_id
from controlplane.tenancy.choices import Role
from tests.factories import AccessTokenFactory, DeploymentFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("offered", ["abc", "A.b-c_9", "x" * 64])
def test_a_safe_client_id_is_answered(offered: str) -> None:
    response = APIClient().get("/api/v1/deployments/", HTTP_X_REQUEST_ID=offered)
    assert response.status_code == 401
    assert response["X-Request-ID"] == offered


@pytest.mark.parametrize("offered", [None, "", "x" * 65, "a b", "a\nb", "<script>", "a/b", "naïve", '{"x":1}'])
def test_an_unsafe_or_missing_id_is_replaced(offered: str | None) -> None:
    headers = {} if offered is None else {"HTTP_X_REQUEST_ID": offered}
    first = APIClient().get("/api/v1/deployments/", **headers)["X-Request-ID"]
    second = APIClient().get("/api/v1/deployments/", **headers)["X-Request-ID"]
    assert first != offered and len(first) == 32 and first.isalnum()
    assert first != second


def test_refusals_before_the_view_carry_it_too() -> None:
    response = APIClient().post(
        "/api/v1/deployments/",
        data=b"x",
        content_type="application/json",
        HTTP_X_REQUEST_ID="big-1",
        CONTENT_LENGTH=str(10**9),
    )
    assert response.status_code == 413
    assert response["X-Request-ID"] == "big-1"


def test_a_write_sends_its_request_id_with_the_task(
    tenant: Any, make_member: Any, sent_headers: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    token = AccessTokenFactory(user=make_member(Role.OPERATOR, tenant)).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    deployment = DeploymentFactory(tenant=tenant, replicas=1, max_replicas=3)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/api/v1/deployments/{deployment.pk}/scale/", {"replicas": 2}, format="json", HTTP_X_REQUEST_ID="write-1"
        )
    assert response.status_code == 202, response.content
    assert sent_headers == [{request_id.TASK_HEADER: "write-1"}]
    # Nothing of the request stays bound once it is answered.
    assert request_id.current() is None


@pytest.fixture
def sent_headers(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The headers of tasks sent after commit (instead of sending them to Redis)."""
    from celery import current_app

    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(current_app, "send_task", lambda name, **kwargs: sent.append(kwargs.get("headers")))
    return sent
