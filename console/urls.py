"""URL configuration: probes, admin, REST API (``console.api_urls``), schema and docs, dashboard."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from console import health

urlpatterns = [
    # Unauthenticated, for the orchestrator's probes (see console/health.py).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # One login form for the whole console: its lockout, second factor and audit (console.dashboard.logins).
    path("admin/login/", RedirectView.as_view(pattern_name="dashboard:login", query_string=True)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("console.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("console.dashboard.urls")),
]
