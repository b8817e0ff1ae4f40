"""Model sources per tenant, attacked the way a hostile tenant owner would: through the REST API
with a personal access token, reaching for another tenant's model directories and for the
control plane's filesystem, and for the trust flags that run code on the platform's hosts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from controlplane.deployments.choices import Phase
from controlplane.tenancy.choices import Role
from tests.conftest import REPO_ROOT
from tests.console.test_settings import GOOD_PRODUCTION, load_settings
from tests.factories import AccessTokenFactory, TargetFactory, TenantFactory
from tests.support.model_dirs import make_model_dir
from tests.workers.fakes import FakeDriver
from workers import reconciler

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(settings: Any, tmp_path: Path) -> Path:
    path = (tmp_path / "models").resolve()
    settings.HANGAR_MODEL_ROOTS = [str(path)]
    return path


@pytest.fixture
def me(make_member: Any) -> dict[str, Any]:
    """A tenant whose owner is the attacker, with an API client holding the owner's token."""
    tenant = TenantFactory(slug="mallory")
    owner = make_member(Role.OWNER, tenant)
    secret = AccessTokenFactory(user=owner).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return {"tenant": tenant, "owner": owner, "client": client}


@pytest.fixture
def victim(root: Path) -> dict[str, Any]:
    tenant = TenantFactory(slug="victim")
    return {"tenant": tenant, "model": make_model_dir(root / "victim", "secret-model")}


def register(client: APIClient, source: str, name: str = "m", **extra: Any) -> Any:
    return client.post("/api/v1/models/", {"name": name, "source": source, **extra}, format="json")


def no_oracle(root: Path, slug: str = "mallory") -> dict[str, Any]:
    """The one answer for every path outside my folders, whether or not it exists."""
    message = [f"Model sources must be directories under {root}/{slug}/ or {root}/_shared/."]
    return {
        "detail": "Outside your model folders.",
        "code": "invalid",
        "errors": {"source": message},
        "source": message,
    }


def test_another_tenants_model_dir_is_refused_without_saying_it_exists(
    root: Path, me: dict[str, Any], victim: dict[str, Any]
) -> None:
    there = register(me["client"], str(victim["model"]))
    assert there.status_code == 400
    assert there.json() == no_oracle(root)
    not_there = register(me["client"], str(root / "victim" / "no-such-model"))
    assert not_there.status_code == 400
    assert not_there.content == there.content


def test_paths_outside_every_root_get_one_answer_whether_or_not_they_exist(
    root: Path, me: dict[str, Any], tmp_path: Path
) -> None:
    existing = tmp_path / "elsewhere"
    make_model_dir(existing)  # a real model dir, just not in any root
    answers = [
        register(me["client"], source)
        for source in ("/etc", "/etc/hangar-no-such-dir", str(existing / "m"), str(tmp_path / "nowhere" / "m"))
    ]
    assert {a.status_code for a in answers} == {400}
    assert len({a.content for a in answers}) == 1  # byte for byte
    assert answers[0].json() == no_oracle(root)


def test_a_symlink_in_my_folder_into_another_tenants_folder_is_refused(
    root: Path, me: dict[str, Any], victim: dict[str, Any]
) -> None:
    (root / "mallory").mkdir(parents=True)
    (root / "mallory" / "innocent").symlink_to(victim["model"])
    (root / "mallory" / "parent").symlink_to(root / "victim")
    for source in (root / "mallory" / "innocent", root / "mallory" / "parent" / "secret-model"):
        response = register(me["client"], str(source))
        assert response.status_code == 400, source
        assert response.json() == no_oracle(root), source


def test_dot_dot_cannot_climb_out(root: Path, me: dict[str, Any], victim: dict[str, Any]) -> None:
    make_model_dir(root / "mallory")
    climbs = [
        f"{root}/mallory/../victim/secret-model",
        f"{root}/mallory/../victim/no-such-model",
        f"{root}/mallory/m/../../victim/secret-model",
        f"{root}/mallory/./m",
    ]
    answers = [register(me["client"], source) for source in climbs]
    assert {a.status_code for a in answers} == {400}
    assert len({a.content for a in answers}) == 1  # existing or not, the same words
    assert answers[0].json()["errors"] == {"source": ["Give the path without '.' or '..' parts."]}


def test_my_own_folder_says_what_is_missing(root: Path, me: dict[str, Any]) -> None:
    (root / "mallory" / "empty").mkdir(parents=True)
    missing = register(me["client"], f"{root}/mallory/no-such-model")
    assert missing.status_code == 400
    assert "is not a directory" in missing.json()["errors"]["source"][0]
    empty = register(me["client"], f"{root}/mallory/empty")
    assert empty.status_code == 400
    assert empty.json()["detail"] == "No weights."


def test_shared_models_are_allowed_and_the_real_path_is_stored(root: Path, me: dict[str, Any]) -> None:
    published = make_model_dir(root / "_shared", "tiny")
    direct = register(me["client"], str(published), name="direct")
    assert direct.status_code == 201, direct.content
    assert direct.json()["source"] == str(published)

    (root / "mallory").mkdir(parents=True)
    (root / "mallory" / "alias").symlink_to(published)
    aliased = register(me["client"], str(root / "mallory" / "alias"), name="aliased")
    assert aliased.status_code == 201, aliased.content
    assert aliased.json()["source"] == str(published)  # resolved, not the alias


def test_a_symlink_swapped_after_registration_is_refused_at_deploy_time(
    root: Path, me: dict[str, Any], victim: dict[str, Any]
) -> None:
    client = me["client"]
    mine = make_model_dir(root / "mallory", "chat")
    model = register(client, str(mine), name="chat")
    assert model.status_code == 201, model.content
    target = TargetFactory(tenant=me["tenant"], kind="local")
    created = client.post(
        "/api/v1/deployments/",
        {"name": "chat", "model": model.json()["id"], "target": target.pk, "replicas": 1, "max_replicas": 1},
        format="json",
    )
    assert created.status_code == 201, created.content
    deployment_id = created.json()["id"]
    driver = FakeDriver()  # the backend is not under test: what the reconciler asks of it is
    driver.auto_ready = True

    def reconcile() -> str:
        reconciler.reconcile(deployment_id, owner="test", driver_factory=lambda *_, **__: driver)
        return str(client.get(f"/api/v1/deployments/{deployment_id}/").json()["phase"])

    assert [reconcile() for _ in range(2)][-1] == Phase.RUNNING  # create, then see it ready
    assert len(driver.created) == 1

    # Swap the registered directory for a symlink into the victim's folder, then restart.
    for child in mine.iterdir():
        child.unlink()
    mine.rmdir()
    mine.symlink_to(victim["model"])
    assert client.post(f"/api/v1/deployments/{deployment_id}/restart/", format="json").status_code in (200, 202)
    assert reconcile() == Phase.FAILED

    body = client.get(f"/api/v1/deployments/{deployment_id}/").json()
    assert body["phase"] == Phase.FAILED
    assert len(driver.created) == 1  # nothing started from the swapped path
    assert "no longer resolves under" in body["phase_message"]
    assert "victim" not in json.dumps(body)  # the other tenant's path is not revealed
    events = client.get("/api/v1/events/", {"deployment": deployment_id}).content.decode()
    assert "victim" not in events


def test_trust_flags_are_for_platform_admins_only(root: Path, me: dict[str, Any], make_member: Any) -> None:
    source = str(make_model_dir(root / "mallory", "risky"))
    for flag in ("trust_remote_code", "allow_unsafe_weights"):
        refused = register(me["client"], source, name="risky", **{flag: True})
        assert refused.status_code == 403, flag
        assert refused.json()["detail"] == "Only platform admins may allow unsafe weights or trust remote code."
    plain = register(me["client"], source, name="plain")
    assert plain.status_code == 201
    patched = me["client"].patch(f"/api/v1/models/{plain.json()['id']}/", {"trust_remote_code": True}, format="json")
    assert patched.status_code == 403

    admin = make_member(Role.OPERATOR, me["tenant"])
    admin.is_staff = True
    admin.save()
    admin.user_permissions.add(
        Permission.objects.get(content_type__app_label="tenancy", codename="administer_platform")
    )
    secret = AccessTokenFactory(user=admin).secret
    platform = APIClient()
    platform.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    allowed = register(platform, source, name="risky", trust_remote_code=True)
    assert allowed.status_code == 201, allowed.content
    assert allowed.json()["trust_remote_code"] is True
    unsafe = platform.patch(f"/api/v1/models/{plain.json()['id']}/", {"allow_unsafe_weights": True}, format="json")
    assert unsafe.status_code == 200 and unsafe.json()["allow_unsafe_weights"] is True


# ----------------------------------------------------------------------------- settings


def settings_in_a_new_process(module: str, env: dict[str, str], expression: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "DJANGO_", "PYTEST_XDIST_"))}
    code = f"import importlib; s = importlib.import_module({module!r}); print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("module", ["console.settings.local", "console.settings.test"])
def test_local_and_test_settings_default_the_model_root_to_the_data_dir(module: str, tmp_path: Path) -> None:
    result = settings_in_a_new_process(
        module, {"HANGAR_DATA_DIR": str(tmp_path)}, "s.HANGAR_MODEL_ROOTS, s.HANGAR_MODEL_SHARED_FOLDER"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{[str(tmp_path.resolve() / 'models')]} _shared"


def test_production_still_requires_model_roots() -> None:
    result = load_settings("console.settings.production", {**GOOD_PRODUCTION, "HANGAR_MODEL_ROOTS": ""})
    assert result.returncode != 0
    assert "Set HANGAR_MODEL_ROOTS" in result.stderr


def test_a_shared_folder_that_could_be_a_tenants_is_refused() -> None:
    result = settings_in_a_new_process("console.settings.local", {"HANGAR_MODEL_SHARED_FOLDER": "shared"}, "1")
    assert result.returncode != 0
    assert "HANGAR_MODEL_SHARED_FOLDER='shared' must be one folder name starting with '_'" in result.stderr
