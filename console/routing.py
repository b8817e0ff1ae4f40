"""Websocket URL routes (``console.asgi`` wraps them in origin and session checks)."""

from django.urls import path

from console.consumers import DeploymentConsumer, TenantConsumer

websocket_urlpatterns = [
    path("ws/deployments/<int:deployment_id>/", DeploymentConsumer.as_asgi()),
    path("ws/tenant/", TenantConsumer.as_asgi()),
]
