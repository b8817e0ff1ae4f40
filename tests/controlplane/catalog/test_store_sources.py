"""Model sources beyond a directory: s3:// against a real S3 server (moto), hf:// against a local
hub; registration reads metadata with range reads and stores a manifest; secrets stay write-only."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.catalog.models import SourceCredential
from controlplane.tenancy.choices import Role
from tests.support.hf_hub import FakeHub, fake_hub
from tests.support.s3_server import S3Server, s3_server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        server.client().create_bucket(Bucket="models")
        yield server


@pytest.fixture
def operator(tenant: Any, make_member: Any, client_for: Any) -> Any:
    return client_for(make_member(Role.OPERATOR, tenant))


@pytest.fixture
def allow_endpoints(settings: Any) -> Any:
    def allow(*urls: str) -> None:
        settings.HANGAR_MODEL_SOURCE_ENDPOINTS = list(urls)

    return allow


def credential(client: Any, name: str, kind: str, endpoint: str, secret: dict[str, str]) -> dict[str, Any]:
    response = client.post(
        "/api/v1/source-credentials/",
        {"name": name, "kind": kind, "endpoint_url": endpoint, "region": "us-east-1", "secret": secret},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def expected_manifest(path: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": p.relative_to(path).as_posix(),
            "size": p.stat().st_size,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(path.rglob("*"))
        if p.is_file()
    ]


@pytest.mark.django_db
class TestS3Source:
    def test_register_from_a_prefix_with_credentials(
        self, s3: S3Server, tiny_model_dir: Path, operator: Any, allow_endpoints: Any
    ) -> None:
        s3.upload_dir(tiny_model_dir, bucket="models", prefix="team/tiny")
        allow_endpoints(s3.url)
        body = credential(
            operator, "minio", "s3", s3.url, {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key}
        )
        assert body["has_secret"] is True and "secret" not in body
        stored = SourceCredential.objects.get(pk=body["id"]).secret
        assert s3.secret_key not in stored and stored  # encrypted at rest

        response = operator.post(
            "/api/v1/models/", {"name": "tiny", "source": "s3://models/team/tiny", "credential": "minio"}, format="json"
        )
        assert response.status_code == 201, response.content
        model = response.json()
        assert model["source"] == "s3://models/team/tiny"
        assert model["architecture"] == "LlamaForCausalLM"
        assert model["parameter_count"] > 1_000_000
        assert model["credential"] == "minio"
        assert model["manifest"] == expected_manifest(tiny_model_dir)
        assert len(model["content_hash"]) == 64
        listed = operator.get("/api/v1/source-credentials/").json()["results"]
        assert [c["name"] for c in listed] == ["minio"] and all("secret" not in c for c in listed)

    def test_wrong_secret_is_refused(self, s3: S3Server, operator: Any, allow_endpoints: Any) -> None:
        allow_endpoints(s3.url)
        credential(operator, "wrong", "s3", s3.url, {"access_key_id": s3.access_key, "secret_access_key": "nope"})
        response = operator.post(
            "/api/v1/models/", {"name": "tiny", "source": "s3://models/team/tiny", "credential": "wrong"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"]["source"] == ["The secret key is wrong."]

    def test_missing_prefix_and_missing_bucket(self, s3: S3Server, operator: Any, allow_endpoints: Any) -> None:
        allow_endpoints(s3.url)
        credential(
            operator, "minio", "s3", s3.url, {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key}
        )
        for source, message in [
            ("s3://models/nothing-here", "No files under this bucket and prefix."),
            ("s3://no-such-bucket/tiny", "The bucket does not exist."),
        ]:
            response = operator.post(
                "/api/v1/models/", {"name": "tiny", "source": source, "credential": "minio"}, format="json"
            )
            assert response.status_code == 400, source
            assert response.json()["errors"]["source"] == [message]

    def test_a_key_missing_since_listing_fails_the_read(self, s3: S3Server, tmp_path: Path) -> None:
        """A key listed but gone when read (deleted in between) is the resolver's SourceNotFound."""
        from workers.runtime.store.resolvers import S3Access, S3Resolver, SourceError

        s3.client().put_object(Bucket="models", Key="gone/config.json", Body=b"{}")
        resolver = S3Resolver(
            bucket="models",
            prefix="gone",
            access=S3Access(endpoint_url=s3.url, access_key_id=s3.access_key, secret_access_key=s3.secret_key),
        )
        assert [f.name for f in resolver.files()] == ["config.json"]
        s3.client().delete_object(Bucket="models", Key="gone/config.json")
        with pytest.raises(SourceError) as info:
            resolver.read("config.json", 0, 2)
        assert info.value.reason == "SourceNotFound"

    def test_path_tricks_and_pickles_in_a_bucket_are_refused(
        self, s3: S3Server, operator: Any, allow_endpoints: Any, settings: Any
    ) -> None:
        allow_endpoints(s3.url)
        credential(
            operator, "minio", "s3", s3.url, {"access_key_id": s3.access_key, "secret_access_key": s3.secret_key}
        )
        client = s3.client()
        client.put_object(Bucket="models", Key="tricks/config.json", Body=b"{}")
        client.put_object(Bucket="models", Key="tricks//etc/cron.d/x", Body=b"* * * * * root id")
        client.put_object(Bucket="models", Key="pickles/config.json", Body=b"{}")
        client.put_object(Bucket="models", Key="pickles/pytorch_model.bin", Body=b"\x80\x04")
        answers = {
            source: operator.post(
                "/api/v1/models/", {"name": "m", "source": source, "credential": "minio"}, format="json"
            )
            for source in ("s3://models/tricks", "s3://models/pickles")
        }
        assert answers["s3://models/tricks"].status_code == 400
        assert "refused name" in answers["s3://models/tricks"].json()["errors"]["source"][0]
        assert answers["s3://models/pickles"].status_code == 400
        assert "pickle weights" in answers["s3://models/pickles"].json()["errors"]["source"][0]
        settings.HANGAR_MODEL_MAX_BYTES = 3  # the two files hold 4 bytes: refused before any is read
        too_big = operator.post(
            "/api/v1/models/", {"name": "m", "source": "s3://models/pickles", "credential": "minio"}, format="json"
        )
        assert too_big.status_code == 400 and "the limit is 3 bytes" in too_big.json()["errors"]["source"][0]

    def test_an_endpoint_the_platform_does_not_list_is_refused(self, operator: Any, allow_endpoints: Any) -> None:
        allow_endpoints("http://127.0.0.1:1")
        response = operator.post(
            "/api/v1/source-credentials/",
            {"name": "inner", "kind": "s3", "endpoint_url": "http://169.254.169.254", "secret": {}},
            format="json",
        )
        assert response.status_code == 400
        assert "endpoint_url" in response.json()["errors"]

    def test_another_tenants_credential_is_neither_seen_nor_usable(
        self, operator: Any, make_member: Any, client_for: Any, allow_endpoints: Any
    ) -> None:
        from tests.factories import TenantFactory

        allow_endpoints("http://127.0.0.1:9")
        theirs = credential(
            operator, "minio", "s3", "http://127.0.0.1:9", {"access_key_id": "a", "secret_access_key": "b"}
        )
        stranger = client_for(make_member(Role.OWNER, TenantFactory()))
        assert stranger.get(f"/api/v1/source-credentials/{theirs['id']}/").status_code == 404
        assert stranger.delete(f"/api/v1/source-credentials/{theirs['id']}/").status_code == 404
        assert stranger.get("/api/v1/source-credentials/").json()["results"] == []
        response = stranger.post(
            "/api/v1/models/", {"name": "m", "source": "s3://models/x", "credential": "minio"}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["errors"]["credential"] == ["No s3 credential named 'minio' in this tenant."]

    def test_shapes_that_never_reach_a_resolver(self, operator: Any) -> None:
        for source in [
            "s3://../x",
            "s3://models/a/../b",
            "hf://../x",
            "ftp://host/x",
            "relative/path",
            "hf://a/b@x..y",
        ]:
            response = operator.post("/api/v1/models/", {"name": "m", "source": source}, format="json")
            assert response.status_code == 400, source
            assert "source" in response.json()["errors"], source


@pytest.fixture
def hub(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    import huggingface_hub.constants

    # Building the session's tiny model switched this test process to HF_HUB_OFFLINE, as replicas
    # run; the control plane registering an hf:// source is not offline.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with fake_hub(tiny_model_dir, token="hf_test_token") as served:
        yield served


@pytest.mark.django_db
class TestHfSource:
    def test_revision_is_pinned_to_its_commit_and_headers_are_range_reads(
        self, hub: FakeHub, tiny_model_dir: Path, operator: Any, allow_endpoints: Any
    ) -> None:
        allow_endpoints(hub.url)
        credential(operator, "hub", "hf", hub.url, {"token": "hf_test_token"})
        response = operator.post(
            "/api/v1/models/",
            {"name": "tiny", "source": "hf://hangar/tiny-llama@main", "credential": "hub"},
            format="json",
        )
        assert response.status_code == 201, response.content
        model = response.json()
        assert model["source"] == f"hf://hangar/tiny-llama@{hub.commit}"
        assert model["parameter_count"] > 1_000_000
        assert model["manifest"] == expected_manifest(tiny_model_dir)
        # The weights' sha256 came from the hub's LFS metadata: the weights were never downloaded,
        # only their header was read (by range), at the pinned commit.
        weights = [p for p in hub.hits if p.endswith(".safetensors")]
        assert weights and all(f"/resolve/{hub.commit}/" in p for p in weights)

    def test_a_revision_that_does_not_exist(self, hub: FakeHub, operator: Any, allow_endpoints: Any) -> None:
        allow_endpoints(hub.url)
        credential(operator, "hub", "hf", hub.url, {"token": "hf_test_token"})
        response = operator.post(
            "/api/v1/models/",
            {"name": "tiny", "source": "hf://hangar/tiny-llama@v9", "credential": "hub"},
            format="json",
        )
        assert response.status_code == 400
        assert response.json()["errors"]["source"] == ["Revision 'v9' does not exist in hangar/tiny-llama."]

    def test_a_wrong_token(self, hub: FakeHub, operator: Any, allow_endpoints: Any) -> None:
        allow_endpoints(hub.url)
        credential(operator, "hub", "hf", hub.url, {"token": "hf_wrong"})
        response = operator.post(
            "/api/v1/models/", {"name": "tiny", "source": "hf://hangar/tiny-llama", "credential": "hub"}, format="json"
        )
        assert response.status_code == 400
        assert "hangar/tiny-llama" in response.json()["errors"]["source"][0]
