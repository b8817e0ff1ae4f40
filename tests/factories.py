"""factory-boy factories for the domain models (shared by every test package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import factory
from django.conf import settings
from django.contrib.auth import get_user_model

from controlplane.catalog.models import Model
from controlplane.deployments.models import Deployment, Replica, Target, TargetGrant
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership, Tenant


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
