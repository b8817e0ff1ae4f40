"""factory-boy factories for the domain models: the suite's one way to make rows.

Rows whose secret the product shows only once (API keys, personal access tokens) are made
through their service, as the product makes them; the secret is then on ``.secret``.
"""

from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from typing import Any

import factory
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.audit.models import AuditLog
from controlplane.catalog.models import Model
from controlplane.core.context import SYSTEM
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica, Target, TargetGrant
from controlplane.keys.models import ApiKey
from controlplane.keys.services import api_key_create
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import AccessToken, Membership, Tenant
from controlplane.tenancy.services import access_token_create
from controlplane.usage.models import UsageRecord


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("pw-for-tests-1")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    name = factory.Sequence(lambda n: f"Tenant {n}")
    slug = factory.Sequence(lambda n: f"tenant-{n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    tenant = factory.SubFactory(TenantFactory)
    role = Role.VIEWER


class ModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Model

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    # In the tenant's own folder of the session's model root, so the reconciler accepts it.
    source = factory.LazyAttribute(lambda o: str(Path(settings.HANGAR_MODEL_ROOTS[0]) / o.tenant.slug / o.name))
    format = "safetensors"
    architecture = "LlamaForCausalLM"
    parameter_count = 3_600_000
    dtype_options = ["float32", "float16", "bfloat16"]


class TargetFactory(factory.django.DjangoModelFactory):
    """A platform target; ``TargetFactory(tenant=t)`` also grants it to ``t``."""

    class Meta:
        model = Target

    name = factory.Sequence(lambda n: f"target-{n}")
    kind = "local"

    @classmethod
    def _create(cls, model_class: type[Target], *args: Any, tenant: Tenant | None = None, **kwargs: Any) -> Target:
        target = super()._create(model_class, *args, **kwargs)
        if tenant is not None:
            TargetGrant.objects.create(target=target, tenant=tenant)
        return target

    @classmethod
    def _build(cls, model_class: type[Target], *args: Any, tenant: Tenant | None = None, **kwargs: Any) -> Target:
        return super()._build(model_class, *args, **kwargs)  # an unsaved target grants nothing


class TargetGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TargetGrant

    target = factory.SubFactory(TargetFactory)
    tenant = factory.SubFactory(TenantFactory)


class DeploymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Deployment

    tenant = factory.SubFactory(TenantFactory)
    model = factory.SubFactory(ModelFactory, tenant=factory.SelfAttribute("..tenant"))
    target = factory.SubFactory(TargetFactory, tenant=factory.SelfAttribute("..tenant"))
    name = factory.Sequence(lambda n: f"deploy-{n}")
    served_model_name = factory.LazyAttribute(lambda o: o.name)


class ReplicaFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Replica

    deployment = factory.SubFactory(DeploymentFactory)
    tenant = factory.LazyAttribute(lambda o: o.deployment.tenant)
    name = factory.Sequence(lambda n: f"replica-{n}")
    endpoint = "http://127.0.0.1:1"


class PlatformAdminFactory(UserFactory):
    """A platform admin as the product makes one: a staff user holding ``tenancy.administer_platform``."""

    is_staff = True

    class Meta:
        skip_postgeneration_save = True  # the hook only adds a permission row

    @factory.post_generation
    def platform_permission(obj: Any, create: bool, extracted: Any, **kwargs: Any) -> None:
        from django.contrib.auth.models import Permission

        if create:
            obj.user_permissions.add(
                Permission.objects.get(content_type__app_label="tenancy", codename="administer_platform")
            )


class DeploymentEventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DeploymentEvent

    tenant = factory.SubFactory(TenantFactory)
    deployment = factory.SubFactory(DeploymentFactory, tenant=factory.SelfAttribute("..tenant"))
    reason = "Tested"
    type = "Normal"
    message = "m"


class AuditLogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AuditLog

    tenant = factory.SubFactory(TenantFactory)
    actor_repr = "someone"
    action = "thing.happen"
    object_type = "thing"


_minutes_ago = itertools.count(1)


class UsageRecordFactory(factory.django.DjangoModelFactory):
    """One minute of usage; each record a minute earlier than the last (minutes are unique per key)."""

    class Meta:
        model = UsageRecord

    tenant = factory.SubFactory(TenantFactory)
    api_key = None
    model = "tiny"
    minute = factory.LazyFunction(
        lambda: timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=next(_minutes_ago))
    )
    requests = 2
    prompt_tokens = 10
    completion_tokens = 5


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """An API key made by ``api_key_create`` (any of its fields as keywords); the token is ``.secret``."""

    class Meta:
        model = ApiKey

    tenant = factory.SubFactory(TenantFactory)
    name = "key"

    @classmethod
    def _create(cls, model_class: type[ApiKey], *args: Any, tenant: Tenant, **data: Any) -> ApiKey:
        key, secret = api_key_create(actor=SYSTEM, tenant=tenant, data=data)
        key.secret = secret  # type: ignore[attr-defined]
        return key


class AccessTokenFactory(factory.django.DjangoModelFactory):
    """A personal access token made by ``access_token_create``; the bearer secret is ``.secret``."""

    class Meta:
        model = AccessToken

    user = factory.SubFactory(UserFactory)
    name = "ci"
    # Tokens of tests that are not about scopes may do whatever their user may.
    scopes = factory.LazyFunction(lambda: ["read", "write", "admin"])
    expires_at = None

    @classmethod
    def _create(cls, model_class: type[AccessToken], *args: Any, **kwargs: Any) -> AccessToken:
        token, secret = access_token_create(actor=SYSTEM, **kwargs)
        token.secret = secret  # type: ignore[attr-defined]
        return token
