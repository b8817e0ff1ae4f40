"""Create the quickstart's admin user, demo tenant, local target and tiny demo model (idempotent).

The admin is a platform admin (a superuser); the local target is a platform target granted to
the demo tenant; the tiny model is published in the shared model folder and registered there.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane.catalog.models import Model
from controlplane.catalog.services import model_register
from controlplane.catalog.sources import folders_text, source_allowed
from controlplane.core.context import Actor
from controlplane.deployments.models import Deployment, Target, TargetGrant
from controlplane.deployments.services import deployment_create, target_create, target_grant
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership, Tenant
from controlplane.tenancy.services import tenant_create

DEMO_TENANT = "demo"
DEMO_MODEL = "tiny-llama"


def demo_model_dir() -> Path:
    """HANGAR_DEMO_MODEL_DIR, or the first model root's shared folder (platform-published)."""
    if settings.HANGAR_DEMO_MODEL_DIR:
        return Path(settings.HANGAR_DEMO_MODEL_DIR)
    return Path(settings.HANGAR_MODEL_ROOTS[0]) / settings.HANGAR_MODEL_SHARED_FOLDER / DEMO_MODEL


class Command(BaseCommand):
    help = "Create the admin user, a demo tenant, a local target and the tiny demo model (deployed once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default=settings.HANGAR_ADMIN_USER)
        parser.add_argument("--no-deploy", action="store_true", help="Register the demo model but do not deploy it.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._admin(options["username"])
        actor = Actor(user=user, via="system")
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
        if tenant is None:
            tenant = tenant_create(actor=actor, name="Demo", slug=DEMO_TENANT)
        Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
        target = Target.objects.filter(name="local").first()
        if target is None:  # a platform target, granted to the demo tenant
            target = target_create(actor=actor, data={"name": "local", "kind": "local"})
        if not TargetGrant.objects.filter(target=target, tenant=tenant).exists():
            target_grant(actor=actor, target=target, tenant=tenant)
        model = Model.objects.filter(tenant=tenant, name=DEMO_MODEL).first()
        if model is None:
            from workers.runtime.tinymodel import build_tiny_model

            self.stdout.write("Building the tiny demo model (a few seconds)...")
            path = build_tiny_model(demo_model_dir())
            model = model_register(actor=actor, tenant=tenant, name=DEMO_MODEL, source=str(path))
        elif not source_allowed(tenant.slug, model.source):
            self.stdout.write(
                self.style.WARNING(
                    f"The demo model's source {model.source} is outside {folders_text(tenant.slug)}, so it "
                    "will not deploy (it predates per-tenant model folders): delete the demo deployment and "
                    "model, then run `manage.py bootstrap_demo` again."
                )
            )
        if not options["no_deploy"] and not Deployment.objects.filter(tenant=tenant).exists():
            with transaction.atomic():
                deployment_create(
                    actor=actor,
                    tenant=tenant,
                    model=model,
                    target=target,
                    data={
                        "name": DEMO_MODEL,
                        "replicas": 1,
                        "max_replicas": 4,
                        "max_model_len": 512,
                        "max_tokens_cap": 256,
                    },
                )
            self.stdout.write(f"Deploying {DEMO_MODEL} on the local target.")

    def _admin(self, username: str) -> Any:
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is not None:
            return user
        password = settings.HANGAR_ADMIN_PASSWORD or secrets.token_urlsafe(12)
        user = user_model.objects.create_superuser(username=username, email="", password=password)
        shown = "from HANGAR_ADMIN_PASSWORD" if settings.HANGAR_ADMIN_PASSWORD else password
        self.stdout.write(self.style.SUCCESS(f"Created admin user {username!r}, password: {shown}"))
        self.stdout.write("(shown once; change it with: .venv/bin/python manage.py changepassword admin)")
        return user
