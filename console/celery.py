"""The Celery application used by the worker and beat processes.

Serialization, acknowledgement and prefetch settings live in settings (``CELERY_*``):
JSON only, late acks, reject on worker loss, prefetch 1. The beat schedule comes from
``workers.schedule`` once settings are loaded (intervals are settings).
"""

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")

app = Celery("hangar")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")
app.autodiscover_tasks(["workers"], related_name="metrics_tasks")
app.steps["worker"].add("console.worker_liveness:HeartbeatFile")


@app.on_after_configure.connect
def _install_beat_schedule(sender: Celery, **_: Any) -> None:
    from workers.schedule import beat_schedule

    sender.conf.beat_schedule = {**beat_schedule(), **(sender.conf.beat_schedule or {})}
