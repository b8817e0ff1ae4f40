"""Create the quickstart's admin user, demo tenant, local target and tiny demo model (idempotent)."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from controlplane.catalog.models import Model
from controlplane.catalog.services import model_register
from controlplane.core.context import Actor
from controlplane.deployments.models import Deployment, Target
from controlplane.deployments.services import deployment_create, target_create
from controlplane.tenancy.choices import Role
from controlplane.tenancy.models import Membership, Tenant
from controlplane.tenancy.services import tenant_create

DEMO_TENANT = "demo"
DEMO_MODEL = "tiny-llama"


class Command(BaseCommand):
    help = "Create the admin user, a demo tenant, a local target and the tiny demo model (deployed once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default=os.environ.get("HANGAR_ADMIN_USER", "admin"))
        parser.add_argument("--no-deploy", action="store_true", help="Register the demo model but do not deploy it.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = self._admin(options["username"])
        actor = Actor(user=user, via="system")
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
        if tenant is None:
            tenant = tenant_create(actor=actor, name="Demo", slug=DEMO_TENANT)
        Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": Role.OWNER})
        target = Target.objects.filter(tenant=tenant, name="local").first()
        if target is None:
            target = target_create(actor=actor, tenant=tenant, data={"name": "local", "kind": "local"})
        model = Model.objects.filter(tenant=tenant, name=DEMO_MODEL).first()
        if model is None:
            from workers.runtime.tinymodel import build_tiny_model

            self.stdout.write("Building the tiny demo model (a few seconds)...")
            path = build_tiny_model(settings.HANGAR_DEMO_MODEL_DIR)
            model = model_register(actor=actor, tenant=tenant, name=DEMO_MODEL, source=str(path))
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
        password = os.environ.get("HANGAR_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = user_model.objects.create_superuser(username=username, email="", password=password)
        shown = "from HANGAR_ADMIN_PASSWORD" if os.environ.get("HANGAR_ADMIN_PASSWORD") else password
        self.stdout.write(self.style.SUCCESS(f"Created admin user {username!r}, password: {shown}"))
        self.stdout.write("(shown once; change it with: .venv/bin/python manage.py changepassword admin)")
        return user
