"""Targets become platform resources: grants to tenants, encrypted credentials, publish host."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0002_reconcile_lease_and_host_port"),
        ("tenancy", "0002_quotas_and_platform_permission"),
    ]

    operations = [
        migrations.CreateModel(
            name="TargetGrant",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("namespace", models.CharField(blank=True, default="", max_length=63)),
                (
                    "target",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="grants", to="deployments.target"
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="target_grants", to="tenancy.tenant"
                    ),
                ),
            ],
            options={"ordering": ["target_id", "tenant_id"]},
        ),
        migrations.AddConstraint(
            model_name="targetgrant",
            constraint=models.UniqueConstraint(fields=("target", "tenant"), name="target_grant_unique"),
        ),
        migrations.AddField(
            model_name="target",
            name="credentials",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="target",
            name="publish_host",
            field=models.CharField(blank=True, default="127.0.0.1", max_length=253),
        ),
        migrations.AddField(
            model_name="target",
            name="kube_auth",
            field=models.CharField(
                blank=True,
                choices=[
                    ("in_cluster", "The worker's in-cluster service account"),
                    ("kubeconfig", "An uploaded kubeconfig"),
                ],
                default="",
                max_length=16,
            ),
        ),
    ]
