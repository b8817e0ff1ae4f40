"""Each per-tenant target becomes a platform target granted to the tenant that owned it.

Names become unique platform-wide: a name used by several tenants keeps it for the oldest target
and gets ``-<tenant slug>`` appended on the others.

Kubernetes targets named a kubeconfig *path on the worker*, chosen by a tenant: reading that file
in would hand the tenant whatever the path pointed at (the worker's own admin kubeconfig when it
was blank). So nothing is read: the target keeps its context and namespace, gets
``kube_auth="kubeconfig"`` with no credentials, and fails its health check ("misconfigured")
until a platform admin uploads a kubeconfig or switches it to the in-cluster service account.
"""

from django.db import migrations


def forwards(apps, schema_editor):
    Target = apps.get_model("deployments", "Target")
    TargetGrant = apps.get_model("deployments", "TargetGrant")
    taken: set[str] = set()
    for target in Target.objects.select_related("tenant").order_by("created_at", "pk"):
        TargetGrant.objects.get_or_create(target=target, tenant_id=target.tenant_id)
        name = target.name
        if name in taken:
            base = f"{target.name}-{target.tenant.slug}"[:100]
            name, n = base, 2
            while name in taken:
                name = f"{base[:95]}-{n}"
                n += 1
        taken.add(name)
        fields = ["name"]
        target.name = name
        if target.kind == "kubernetes":
            target.kube_auth = "kubeconfig"
            fields.append("kube_auth")
        target.save(update_fields=fields)


def backwards(apps, schema_editor):
    Target = apps.get_model("deployments", "Target")
    TargetGrant = apps.get_model("deployments", "TargetGrant")
    for target in Target.objects.all():
        grant = TargetGrant.objects.filter(target=target).order_by("created_at").first()
        if grant is None:
            raise RuntimeError(f"Target {target.name!r} is granted to no tenant; it cannot go back to one.")
        target.tenant_id = grant.tenant_id
        target.save(update_fields=["tenant"])


class Migration(migrations.Migration):
    dependencies = [("deployments", "0003_platform_targets")]

    operations = [migrations.RunPython(forwards, backwards)]
