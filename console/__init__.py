"""Hangar's Django project: settings, URLs, ASGI app, Celery app, dashboard and websockets."""

from console.celery import app as celery_app

__all__ = ["celery_app"]
