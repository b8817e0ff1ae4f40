"""Seed a throwaway database for the database-outage test (run in a process of its own).

``python -m tests.controlplane.gateway.outage_seed <replica url>`` with ``DATABASE_URL`` pointing at the
throwaway cluster: applies the migrations, then creates a tenant whose owner has a personal
access token, a Running deployment ``m`` with one ready replica at the URL, and three gateway
keys; prints what the test needs as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys


def main(replica_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.test")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    from controlplane.deployments.choices import Phase, ReplicaState
    from controlplane.tenancy.choices import Role
    from tests.factories import AccessTokenFactory, ApiKeyFactory, DeploymentFactory, MembershipFactory, ReplicaFactory

    owner = MembershipFactory(role=Role.OWNER)
    tenant = owner.tenant
    user_token = AccessTokenFactory(user=owner.user, name="outage test").secret
    deployment = DeploymentFactory(tenant=tenant, served_model_name="m", phase=Phase.RUNNING)
    ReplicaFactory(deployment=deployment, endpoint=replica_url, state=ReplicaState.READY)
    keys = {}
    for name in ("served", "revoked", "unseen"):
        key = ApiKeyFactory(tenant=tenant, name=name)
        keys[name] = {"id": key.pk, "token": key.secret}
    print(json.dumps({"user_token": user_token, "tenant": tenant.slug, "keys": keys}))


if __name__ == "__main__":
    main(sys.argv[1])
