"""Targets no longer belong to a tenant; names are unique platform-wide; no kubeconfig paths."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("deployments", "0004_grant_existing_targets")]

    operations = [
        migrations.RemoveConstraint(model_name="target", name="target_unique_name_per_tenant"),
        migrations.RemoveField(model_name="target", name="tenant"),
        migrations.RemoveField(model_name="target", name="kubeconfig_path"),
        migrations.AlterField(
            model_name="target", name="name", field=models.CharField(max_length=100, unique=True)
        ),
    ]
