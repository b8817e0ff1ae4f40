"""Fixtures shared by the whole suite: users with roles in tenants, API clients, the tiny model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import MembershipFactory, TenantFactory, UserFactory

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def make_member(db: Any) -> Callable[..., Any]:
    """``make_member(role, tenant=None)`` -> a user holding ``role`` in ``tenant`` (new if None)."""

    def make(role: str, tenant: Any = None, username: str | None = None) -> Any:
        tenant = tenant or TenantFactory()
        user = UserFactory(username=username) if username else UserFactory()
        MembershipFactory(user=user, tenant=tenant, role=role)
        return user

    return make


@pytest.fixture
def tenant(db: Any) -> Any:
    return TenantFactory()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[Any], APIClient]:
    def make(user: Any) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama model built once per session (deterministic, seconds to build)."""
    from workers.runtime.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama")
