"""Factories for rows the shared factories do not cover (events, keys, usage, audit, tokens, model dirs)."""

from __future__ import annotations

import json
import struct
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from controlplane.audit.models import AuditLog
from controlplane.core.context import SYSTEM
from controlplane.deployments.models import DeploymentEvent
from controlplane.keys.models import ApiKey
from controlplane.keys.services import api_key_create
from controlplane.tenancy.models import AccessToken
from controlplane.tenancy.services import access_token_create
from controlplane.usage.models import UsageRecord
from tests.factories import DeploymentFactory


def make_event(tenant: Any, deployment: Any = None, reason: str = "Tested", type: str = "Normal") -> DeploymentEvent:
    deployment = deployment or DeploymentFactory(tenant=tenant)
    return DeploymentEvent.objects.create(tenant=tenant, deployment=deployment, reason=reason, type=type, message="m")


def make_api_key(tenant: Any, name: str = "key") -> ApiKey:
    key, _ = api_key_create(actor=SYSTEM, tenant=tenant, data={"name": name})
    return key


_minute = {"n": 0}


def make_usage(tenant: Any, api_key: Any = None, model: str = "tiny") -> UsageRecord:
    _minute["n"] += 1
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=_minute["n"])
    return UsageRecord.objects.create(
        tenant=tenant, api_key=api_key, model=model, minute=minute, requests=2, prompt_tokens=10, completion_tokens=5
    )


def make_audit(tenant: Any, action: str = "thing.happen") -> AuditLog:
    return AuditLog.objects.create(tenant=tenant, actor_repr="someone", action=action, object_type="thing")


def make_token(user: Any, **kwargs: Any) -> tuple[AccessToken, str]:
    return access_token_create(actor=SYSTEM, user=user, name=kwargs.pop("name", "ci"), **kwargs)


def make_model_dir(root: Path, name: str = "m") -> Path:
    """A model directory the catalog accepts: config.json and a small safetensors file."""
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 256})
    )
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    (path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 24)
    return path


def tenant_folder(tenant: Any) -> Path:
    """The tenant's own folder in the first model root (``<root>/<slug>/``)."""
    return Path(settings.HANGAR_MODEL_ROOTS[0]) / tenant.slug


def shared_folder() -> Path:
    """The first model root's shared folder (``<root>/_shared/``), where platform admins publish."""
    return Path(settings.HANGAR_MODEL_ROOTS[0]) / settings.HANGAR_MODEL_SHARED_FOLDER


def make_tenant_model_dir(tenant: Any, name: str = "m") -> Path:
    """A model directory in ``tenant``'s own folder, which its members may register."""
    return make_model_dir(tenant_folder(tenant), name)
