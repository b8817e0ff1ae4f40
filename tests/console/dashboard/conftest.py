"""Fixtures of the dashboard tests: a tenant with one member per role and a deployment in it."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from controlplane.tenancy.choices import Role
from tests.factories import DeploymentFactory, MembershipFactory, ReplicaFactory, TenantFactory, UserFactory

ROLES = [Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.OWNER]


@pytest.fixture(autouse=True)
def _private_redis_namespace(private_redis_namespace: None) -> None:
    """Every dashboard test gets groups and cache keys of its own (see tests/conftest.py)."""


@pytest.fixture
def team(db: Any) -> dict[str, Any]:
    """``team["viewer"]`` … ``team["owner"]``: users of one tenant; ``team["tenant"]``; a deployment."""
    tenant = TenantFactory()
    people: dict[str, Any] = {"tenant": tenant}
    for role in ROLES:
        user = UserFactory(username=f"{role}-{tenant.slug}")
        MembershipFactory(user=user, tenant=tenant, role=role)
        people[str(role)] = user
    deployment = DeploymentFactory(tenant=tenant)
    people["deployment"] = deployment
    people["replica"] = ReplicaFactory(deployment=deployment, state="ready")
    return people


@pytest.fixture
def login(client: Client) -> Any:
    def as_user(user: Any) -> Client:
        client.force_login(user)
        return client

    return as_user
