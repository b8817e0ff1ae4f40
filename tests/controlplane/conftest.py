"""Fixtures of the API tests; parametrizes the mixin's action tests per endpoint class."""

from __future__ import annotations

from typing import Any

import pytest

from tests.controlplane.permission_table import API_PERMISSIONS, SELF, STAFF


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Each endpoint class lists its extra actions; a class without any gets one skipped case.
    if "action_name" in metafunc.fixturenames and metafunc.cls is not None:
        names = list(getattr(metafunc.cls, "detail_actions", {})) or [None]
        metafunc.parametrize("action_name", names)
    if "list_action_name" in metafunc.fixturenames and metafunc.cls is not None:
        names = list(getattr(metafunc.cls, "list_actions", {})) or [None]
        metafunc.parametrize("list_action_name", names)


@pytest.fixture
def sent_tasks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    """Record tasks enqueued after commit instead of sending them to Redis."""
    sent: list[tuple[str, list[Any]]] = []

    def send_task(name: str, args: list[Any] | None = None, **kwargs: Any) -> None:
        sent.append((name, list(args or [])))

    from celery import current_app

    monkeypatch.setattr(current_app, "send_task", send_task)
    return sent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Endpoints without extra actions: drop the placeholder cases instead of reporting skips.
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        placeholder = ("action_name" in params and params["action_name"] is None) or (
            "list_action_name" in params and params["list_action_name"] is None
        )
        if getattr(item, "originalname", "") == "test_create_in_other_tenant_is_refused":
            # Only endpoints whose objects are created inside a tenant can be created in the wrong one.
            placeholder = placeholder or API_PERMISSIONS[item.cls.endpoint].get("create") in (None, STAFF, SELF)
        (drop if placeholder else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
