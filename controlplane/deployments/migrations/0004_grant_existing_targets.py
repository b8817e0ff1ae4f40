"""Each per-tenant target becomes a platform target granted to the tenant that owned it.

Names become unique platform-wide: a name used by several tenants keeps it for the oldest target
and gets ``-<tenant slug>`` appended on the others. A kubeconfig that was named by path on the
worker is read in and stored encrypted (as uploaded content), if this process can read it;
otherwise the target is left with no credentials and its health check says so.
"""

from pathlib import Path

from django.db import migrations


def forwards(apps, schema_editor):
    from controlplane.core.crypto import encrypt_json

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
            path = Path(target.kubeconfig_path or "~/.kube/config").expanduser()
            try:
                content = path.read_text()
            except (OSError, UnicodeDecodeError):
                content = ""
            if content:
                target.credentials = encrypt_json({"kubeconfig": content})
                fields.append("credentials")
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
