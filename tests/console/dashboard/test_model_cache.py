"""The model page says which of the tenant's targets hold the model in their node cache."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from controlplane.deployments.model_cache import model_cache_forget, model_cache_record
from tests.factories import ModelFactory, TargetFactory

pytestmark = pytest.mark.django_db


def test_the_model_page_lists_granted_targets_that_cache_it(login: Any, team: dict[str, Any]) -> None:
    tenant = team["tenant"]
    model = ModelFactory(tenant=tenant, content_hash="a" * 64, size_bytes=2048)
    granted = TargetFactory(tenant=tenant, name="gpu-east")
    other = TargetFactory(name="someone-elses")  # not granted to this tenant
    model_cache_record(target=granted, model=model)
    model_cache_record(target=other, model=model)
    url = reverse("dashboard:model-detail", args=[model.pk])

    content = login(team["viewer"]).get(url).content.decode()
    assert 'data-target="gpu-east"' in content
    assert "someone-elses" not in content

    model_cache_forget(target=granted, content_hashes=["a" * 64])
    content = login(team["viewer"]).get(url).content.decode()
    assert 'data-target="gpu-east"' not in content
    assert "No target holds this model in its cache yet" in content
