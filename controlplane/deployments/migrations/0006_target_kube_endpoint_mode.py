"""Targets say how the gateway reaches Kubernetes replicas: pod IPs (as before) or their Service."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("deployments", "0005_target_without_tenant")]

    operations = [
        migrations.AddField(
            model_name="target",
            name="kube_endpoints",
            field=models.CharField(
                choices=[
                    ("pod_ip", "Each ready pod by its IP (the gateway balances per pod)"),
                    ("service", "The deployment's Service (the gateway balances per Service, kube-proxy per pod)"),
                ],
                default="pod_ip",
                max_length=16,
            ),
        ),
    ]
