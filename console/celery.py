"""The Celery application used by the worker and beat processes.

Serialization, acknowledgement and prefetch settings live in settings (``CELERY_*``):
JSON only, late acks, reject on worker loss, prefetch 1.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")

app = Celery("hangar")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")
