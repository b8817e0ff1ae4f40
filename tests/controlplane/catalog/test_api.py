"""Catalog models endpoint: register a directory, read-only metadata, memory estimates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controlplane.tenancy.choices import Role
from tests.controlplane.api_mixins import EndpointTests
from tests.factories import DeploymentFactory, ModelFactory
from tests.support.model_dirs import make_tenant_model_dir, tenant_folder


class TestModels(EndpointTests):
    endpoint = "models"

    def make(self, tenant: Any) -> Any:
        return ModelFactory(tenant=tenant)

    def create_data(self, tenant: Any) -> dict[str, Any]:
        return {"tenant": tenant.slug, "name": "tiny", "source": str(make_tenant_model_dir(tenant))}

    def update_data(self, obj: Any) -> dict[str, Any]:
        return {"description": "A small model", "dtype_options": ["float32"]}

    def filters_reaching(self, obj: Any) -> list[dict[str, Any]]:
        return [{"tenant": obj.tenant.slug}, {"name": obj.name}, {"search": obj.name[:3]}]


@pytest.mark.django_db
class TestModelRules:
    def test_register_reads_metadata(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        response = client.post(
            "/api/v1/models/", {"name": "tiny", "source": str(make_tenant_model_dir(tenant))}, format="json"
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["architecture"] == "LlamaForCausalLM"
        assert body["parameter_count"] == 6
        assert body["context_length"] == 256
        assert body["format"] == "safetensors"
        assert set(body["memory_estimate"]) == {"float32", "float16", "bfloat16", "int8"}
        assert body["memory_estimate"]["float32"] > body["memory_estimate"]["float16"]

    def test_detail_has_memory_estimate(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        model = ModelFactory(tenant=tenant, parameter_count=1_000_000_000)
        body = client_for(make_member(Role.VIEWER, tenant)).get(f"/api/v1/models/{model.pk}/").json()
        assert body["memory_estimate"]["float16"] == int(2e9 * 1.2) + 512 * 1024 * 1024

    def test_metadata_is_read_only(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        model = ModelFactory(tenant=tenant)
        response = client_for(make_member(Role.OPERATOR, tenant)).patch(
            f"/api/v1/models/{model.pk}/", {"parameter_count": 1, "source": "/x"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"] == {
            "parameter_count": ["This field is read-only."],
            "source": ["This field is read-only."],
        }

    def test_bad_source_is_a_field_error(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        empty = tenant_folder(tenant) / "empty"
        empty.mkdir(parents=True)
        for source in ("relative/dir", str(tenant_folder(tenant) / "missing"), str(empty)):
            response = client.post("/api/v1/models/", {"name": "m", "source": source}, format="json")
            assert response.status_code == 400, source
            assert "source" in response.json()["errors"], source

    def test_trust_flags_need_a_platform_admin(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        data = {"name": "m", "source": str(make_tenant_model_dir(tenant)), "trust_remote_code": True}
        owner = client_for(make_member(Role.OWNER, tenant))
        refused = owner.post("/api/v1/models/", data, format="json")
        assert refused.status_code == 403
        assert refused.json()["detail"] == "Only platform admins may allow unsafe weights or trust remote code."
        admin = make_member(Role.OPERATOR, tenant)
        admin.is_superuser = True
        admin.save()
        assert client_for(admin).post("/api/v1/models/", data, format="json").status_code == 201

    def test_model_in_use_cannot_be_deleted(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        deployment = DeploymentFactory(tenant=tenant)
        response = client_for(make_member(Role.OPERATOR, tenant)).delete(f"/api/v1/models/{deployment.model_id}/")
        assert response.status_code == 409


def test_trust_permission_matches_the_documented_table() -> None:
    from tests.controlplane.permission_table import API_PERMISSIONS, PLATFORM

    assert API_PERMISSIONS["models"]["set allow_unsafe_weights / trust_remote_code"] == PLATFORM


@pytest.mark.django_db
class TestModelTask:
    """Embedding models: read from a sentence-transformers directory, or said at registration."""

    def register(self, client: Any, tenant: Any, path: Any, **extra: Any) -> Any:
        return client.post("/api/v1/models/", {"name": "m", "source": str(path), **extra}, format="json")

    def test_a_pooling_config_makes_an_embedding_model(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        path = make_tenant_model_dir(tenant)
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_lasttoken": True}))
        (path / "hangar-tinymodel.json").write_text(json.dumps({"random_weights": True}))
        response = self.register(client_for(make_member(Role.OPERATOR, tenant)), tenant, path)
        assert response.status_code == 201, response.content
        body = response.json()
        assert (body["task"], body["pooling"], body["random_weights"]) == ("embed", "last", True)

    def test_a_plain_directory_generates_unless_told(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        body = self.register(client, tenant, make_tenant_model_dir(tenant)).json()
        assert (body["task"], body["pooling"], body["random_weights"]) == ("generate", "", False)
        told = self.register(client, tenant, make_tenant_model_dir(tenant, "e"), name="e", task="embed").json()
        assert (told["task"], told["pooling"]) == ("embed", "mean")

    def test_only_embedding_models_pool(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        client = client_for(make_member(Role.OPERATOR, tenant))
        response = self.register(client, tenant, make_tenant_model_dir(tenant), task="generate", pooling="last")
        assert response.status_code == 400
        assert "pooling" in response.json()["errors"]
        response = self.register(client, tenant, make_tenant_model_dir(tenant), task="embed", pooling="max")
        assert response.status_code == 400 and "pooling" in response.json()["errors"]

    def test_the_task_is_fixed_after_registration(self, tenant: Any, make_member: Any, client_for: Any) -> None:
        model = ModelFactory(tenant=tenant)
        response = client_for(make_member(Role.OPERATOR, tenant)).patch(
            f"/api/v1/models/{model.pk}/", {"task": "embed"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"] == {"task": ["This field is read-only."]}

    def test_embedding_replicas_are_started_with_their_task_and_pooling(self, tenant: Any) -> None:
        from workers.reconciler import replica_spec

        make_tenant_model_dir(tenant, "emb")
        model = ModelFactory(tenant=tenant, name="emb", task="embed", pooling="last")
        args = replica_spec(DeploymentFactory(tenant=tenant, model=model), slot=0).runtime_args(
            model="/model", host="h", port=1
        )
        assert args[-4:] == ["--task", "embed", "--pooling", "last"]
        plain = replica_spec(DeploymentFactory(tenant=tenant), slot=0).runtime_args(model="/model", host="h", port=1)
        assert "--task" not in plain and "--pooling" not in plain
