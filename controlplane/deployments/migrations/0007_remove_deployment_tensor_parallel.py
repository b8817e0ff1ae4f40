"""Deployments lose ``tensor_parallel``: it was accepted and validated but never reached a replica
(the runtime has no multi-GPU sharding)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("deployments", "0006_target_kube_endpoint_mode")]

    operations = [
        migrations.RemoveField(model_name="deployment", name="tensor_parallel"),
    ]
